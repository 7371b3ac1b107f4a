"""Records as OpenSearch documents: writing, reading by id, deleting, and the conditional updates
the workers make. Why updates are painless scripts guarded by ``content_hash`` and never upsert:
ARCHITECTURE.md, "OpenSearch store", Conditional updates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from opensearchpy import exceptions as os_errors
from opensearchpy import helpers

from imagesearch.records import ImageRecord
from imagesearch.stores.base import CaptionUpdate, ImageVectorUpdate, StoreUnavailable
from imagesearch.stores.opensearch.lifecycle import IndexLifecycle
from imagesearch.stores.opensearch.mapping import VECTOR_FIELDS, json_vector
from imagesearch.stores.opensearch.transport import BulkItem, IndexMissing, StoreRejected, is_transient
from imagesearch.vocab import CaptionStatus, Stage, Status

log = logging.getLogger(__name__)

_VECTOR_SOURCE = list(VECTOR_FIELDS.values())
_MGET_CHUNK = 500

# Painless scripts: constant sources (compiled once and cached by OpenSearch), values as params.


def _if_same_version(*assignments: str) -> str:
    """Apply the assignments only to the version of the image the update was computed for."""
    body = "".join(f"  ctx._source{a};\n" for a in assignments)
    return f"if (ctx._source.content_hash == params.content_hash) {{\n{body}}} else {{\n  ctx.op = 'noop';\n}}"


IMAGE_SCRIPT = _if_same_version(
    f".status = '{Status.INDEXED}'", ".error = null", ".image_vector = params.vector", ".image_model = params.model",
    ".thumb_key = params.thumb_key", ".width = params.width", ".height = params.height",
    ".updated_at = params.now")
CAPTION_SCRIPT = _if_same_version(
    ".caption = params.caption", f".caption_status = '{CaptionStatus.DONE}'", ".caption_vector = params.vector",
    ".caption_model = params.caption_model", ".text_model = params.text_model", ".updated_at = params.now")
# One script for both stages: ``status_field`` names the field, and "failed" is the same word in
# Status and CaptionStatus.
FAILED_SCRIPT = _if_same_version(f"[params.status_field] = '{Status.FAILED}'", ".error = params.error",
                                 ".updated_at = params.now")

# (image id, content hash, stage, error)
Failure = tuple[str, str, str, str]


class RecordOperations(IndexLifecycle):
    """The record part of :class:`~imagesearch.stores.opensearch.OpenSearchStore`."""

    refresh: bool | Literal["wait_for"]
    _warned_models: set[str]

    def put(self, record: ImageRecord) -> None:
        self.put_many([record])

    def put_many(self, records: Iterable[ImageRecord]) -> None:
        """Insert or replace records as queued (vectors, caption and results dropped)."""
        records = list(records)
        if not records:
            return
        self._ensure_index()
        now = _now_ms()
        actions = [{"_op_type": "index", "_index": self._write, "_id": r.id, "_source": _document(r, now)}
                   for r in records]
        for item in self._bulk(actions):
            if not item.ok:
                raise StoreRejected(f"OpenSearch refused record {item.id}: {item.status} {item.describe()}")

    def get(self, image_id: str) -> ImageRecord | None:
        return self.get_many([image_id]).get(image_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, ImageRecord]:
        ids = list(dict.fromkeys(ids))
        out: dict[str, ImageRecord] = {}
        for start in range(0, len(ids), _MGET_CHUNK):
            try:
                resp = self.retrying.call(self.client.mget, index=self._read,
                                          body={"ids": ids[start:start + _MGET_CHUNK]}, _source_excludes=_VECTOR_SOURCE)
            except os_errors.NotFoundError:
                return out
            for doc in resp["docs"]:
                if "error" in doc:
                    raise StoreUnavailable(f"reading {doc.get('_id')} failed: {doc['error']}")
                if doc.get("found"):
                    record = _to_record(doc["_source"])
                    out[record.id] = record
        return out

    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]:
        """Every record behind the read alias (or the bound index), without vectors, through a
        scroll: the source of a reindex."""
        hits = helpers.scan(self.client, index=self._read, query={"query": {"match_all": {}}}, size=batch_size,
                            _source_excludes=_VECTOR_SOURCE)
        try:
            for hit in hits:
                yield _to_record(hit["_source"])
        except os_errors.NotFoundError:
            return
        except os_errors.TransportError as exc:
            if is_transient(exc.status_code):
                raise StoreUnavailable(f"scrolling {self._read} failed: {exc}") from exc
            raise

    def delete(self, image_id: str) -> ImageRecord | None:
        for _ in range(self.retrying.retries + 1):
            try:
                doc = self.retrying.call(self.client.get, index=self._read, id=image_id,
                                         _source_excludes=_VECTOR_SOURCE)
            except os_errors.NotFoundError:
                return None
            if not doc.get("found"):
                return None
            (item,) = self._bulk([{"_op_type": "delete", "_index": self._write, "_id": image_id,
                                   "if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"]}])
            if item.ok:
                return _to_record(doc["_source"])
            if item.status == 404:
                return None  # deleted by someone else meanwhile
            if item.status != 409:
                raise StoreRejected(f"OpenSearch refused to delete {image_id}: {item.status} {item.describe()}")
            # 409: changed since it was read; read again so the record returned is the one removed
        raise StoreUnavailable(f"{image_id} kept changing while being deleted")

    def set_image_vectors(self, updates: list[ImageVectorUpdate]) -> list[str]:
        if not updates:
            return []
        state = self._ensure_index(len(updates[0].vector), updates[0].model)
        foreign = {u.model for u in updates} - {state.model} if state.model else set()
        if foreign - self._warned_models:
            self._warned_models |= foreign
            log.warning("vectors of %s are being written to %s, built for %s: search filters by model, but "
                        "run a reindex to give the new model its own index", sorted(foreign), state.name, state.model)
        now = _now_ms()
        actions = [self._update(u.id, IMAGE_SCRIPT, {
            "content_hash": u.content_hash, "vector": json_vector(u.vector), "model": u.model,
            "thumb_key": u.thumb_key, "width": int(u.width), "height": int(u.height), "now": now}) for u in updates]
        return self._apply(actions, Stage.EMBED, [u.content_hash for u in updates])

    def set_captions(self, updates: list[CaptionUpdate]) -> list[str]:
        if not updates:
            return []
        self._ensure_index(len(updates[0].vector), updates[0].text_model)
        now = _now_ms()
        actions = [self._update(u.id, CAPTION_SCRIPT, {
            "content_hash": u.content_hash, "caption": u.caption, "vector": json_vector(u.vector),
            "caption_model": u.caption_model, "text_model": u.text_model, "now": now}) for u in updates]
        return self._apply(actions, Stage.CAPTION, [u.content_hash for u in updates])

    def set_failed(self, image_id: str, content_hash: str, stage: str, error: str) -> None:
        self._ensure_index()
        (item,) = self._mark_failed([(image_id, content_hash, stage, error)])
        if not item.ok and item.status != 404:
            raise StoreRejected(f"OpenSearch refused to mark {image_id} failed: {item.status} {item.describe()}")

    def _bulk(self, actions: list[dict[str, Any]]) -> list[BulkItem]:
        params: dict[str, Any] = {}
        if self.refresh:
            params["refresh"] = self.refresh
        if self._index is None:
            params["require_alias"] = True  # never auto-create a concrete index named like an alias
        try:
            return self.retrying.bulk(actions, **params)
        except IndexMissing:
            self._forget_index()
            raise

    def _update(self, image_id: str, script: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"_op_type": "update", "_index": self._write, "_id": image_id, "retry_on_conflict": 3,
                "script": {"source": script, "lang": "painless", "params": params}}

    def _apply(self, actions: list[dict[str, Any]], stage: str, hashes: list[str]) -> list[str]:
        """Run conditional updates; ids updated are returned, 400s recorded as failures."""
        done: list[str] = []
        rejected: list[Failure] = []
        for item, content_hash in zip(self._bulk(actions), hashes, strict=True):
            if item.ok:
                if item.result == "updated":
                    done.append(item.id)
            elif item.status == 404:
                continue  # deleted meanwhile: never resurrected
            elif item.status == 400:
                log.warning("OpenSearch rejected the %s update of %s: %s", stage, item.id, item.describe())
                rejected.append((item.id, content_hash, stage, f"OpenSearch rejected the update: {item.describe()}"))
            else:
                raise StoreRejected(f"OpenSearch refused to update {item.id}: {item.status} {item.describe()}")
        for item in self._mark_failed(rejected):
            if not item.ok and item.status != 404:
                log.error("could not record the failure of %s: %s %s", item.id, item.status, item.describe())
        return done

    def _mark_failed(self, failures: list[Failure]) -> list[BulkItem]:
        if not failures:
            return []
        now = _now_ms()
        return self._bulk([
            self._update(image_id, FAILED_SCRIPT, {
                "content_hash": content_hash, "now": now, "error": f"{stage}: {error}",
                "status_field": "status" if stage == Stage.EMBED else "caption_status"})
            for image_id, content_hash, stage, error in failures])


# -- documents ----------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _document(record: ImageRecord, now_ms: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "collection": record.collection,
        "tags": list(record.tags),
        "external_id": record.external_id,
        "source": record.source,
        "blob_key": record.blob_key,
        "content_hash": record.content_hash,
        "status": Status.QUEUED,
        "error": None,
        "caption": None,
        "caption_status": CaptionStatus.PENDING,
        "thumb_key": None,
        "width": None,
        "height": None,
        "image_model": None,
        "caption_model": None,
        "text_model": None,
        "created_at": round(record.created_at * 1000),
        "updated_at": now_ms,
    }


def _to_record(source: dict[str, Any]) -> ImageRecord:
    tags = source.get("tags") or []
    return ImageRecord(
        id=source["id"],
        blob_key=source["blob_key"],
        content_hash=source["content_hash"],
        source=source.get("source") or "",
        collection=source["collection"],
        tenant=source["tenant"],
        external_id=source.get("external_id"),
        tags=[tags] if isinstance(tags, str) else list(tags),
        status=source["status"],
        error=source.get("error"),
        caption=source.get("caption"),
        caption_status=source.get("caption_status", CaptionStatus.PENDING),
        thumb_key=source.get("thumb_key"),
        width=source.get("width"),
        height=source.get("height"),
        image_model=source.get("image_model"),
        caption_model=source.get("caption_model"),
        text_model=source.get("text_model"),
        created_at=float(source["created_at"]) / 1000,
        updated_at=float(source["updated_at"]) / 1000,
    )
