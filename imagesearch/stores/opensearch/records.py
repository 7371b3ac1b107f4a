"""Records as OpenSearch documents: writing, reading by id, deleting, and the conditional updates
the workers make. Why updates are painless scripts guarded by ``content_hash`` and never upsert:
ARCHITECTURE.md, "OpenSearch store", Conditional updates.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from opensearchpy import exceptions as os_errors
from opensearchpy import helpers

from imagesearch.attributes import AttributeSchema, Value
from imagesearch.records import ImageRecord
from imagesearch.stores.base import CaptionUpdate, ImageVectorUpdate, RecordPatch, StoreUnavailable
from imagesearch.stores.opensearch.lifecycle import IndexLifecycle
from imagesearch.stores.opensearch.mapping import VECTOR_FIELDS, json_vector
from imagesearch.stores.opensearch.transport import BulkItem, IndexMissing, StoreRejected, failed_call_is_transient
from imagesearch.vocab import AttributeType, CaptionStatus, Stage, Status

log = logging.getLogger(__name__)

VECTOR_SOURCE = list(VECTOR_FIELDS.values())
_MGET_CHUNK = 500

# Painless scripts: constant sources (compiled once and cached by OpenSearch), values as params.


def _if_same_version(*assignments: str) -> str:
    """Apply the assignments only to the version of the image the update was computed for."""
    body = "".join(f"  ctx._source{a};\n" for a in assignments)
    return f"if (ctx._source.content_hash == params.content_hash) {{\n{body}}} else {{\n  ctx.op = 'noop';\n}}"


IMAGE_SCRIPT = _if_same_version(
    f".status = '{Status.INDEXED}'", ".error = null", ".image_vector = params.vector", ".image_model = params.model",
    ".thumb_key = params.thumb_key", ".width = params.width", ".height = params.height",
    ".taken_at = params.taken_at", ".updated_at = params.now")
CAPTION_SCRIPT = _if_same_version(
    ".caption = params.caption", f".caption_status = '{CaptionStatus.DONE}'", ".caption_vector = params.vector",
    ".caption_model = params.caption_model", ".text_model = params.text_model", ".updated_at = params.now")
# One script for both stages: ``status_field`` names the field, and "failed" is the same word in
# Status and CaptionStatus.
FAILED_SCRIPT = _if_same_version(f"[params.status_field] = '{Status.FAILED}'", ".error = params.error",
                                 ".updated_at = params.now")
# An edit (PATCH): each field in ``params.fields`` replaced whole. A partial ``doc`` would merge
# ``attributes`` key by key, so an attribute the edit removes would stay; like the other scripts it
# has no upsert, so an edit of a deleted record is a 404 and never recreates it.
PATCH_SCRIPT = ("for (def entry : params.fields.entrySet()) {\n  ctx._source[entry.getKey()] = entry.getValue();\n}\n"
                "ctx._source.updated_at = params.now;")
PATCHABLE = ("collection", "tags", "attributes", "title", "description")

# (image id, content hash, stage, error)
Failure = tuple[str, str, str, str]
# A document's version in its index, (seq_no, primary_term): every write to it changes it.
Version = tuple[int, int]


class RecordOperations(IndexLifecycle):
    """The record part of :class:`~imagesearch.stores.opensearch.OpenSearchStore`."""

    refresh: bool | Literal["wait_for"]
    _warned_models: set[str]
    attributes: AttributeSchema

    def put(self, record: ImageRecord) -> None:
        self.put_many([record])

    def put_many(self, records: Iterable[ImageRecord]) -> None:
        """Insert or replace records as queued (vectors, caption and results dropped)."""
        records = list(records)
        if not records:
            return
        self._ensure_index()
        now = _now_ms()
        actions = [{"_op_type": "index", "_index": self._write, "_id": r.id,
                    "_source": _document(r, now, self.attributes)} for r in records]
        for item in self._bulk(actions):
            if not item.ok:
                raise StoreRejected(f"OpenSearch refused record {item.id}: {item.status} {item.describe()}")

    def put_many_if(self, records: Iterable[ImageRecord], expected: Mapping[str, Version]) -> list[str]:
        """:meth:`put_many`, each record written only if its document is still at the version
        ``expected`` holds for its id (``if_seq_no``/``if_primary_term``), or still absent where
        ``expected`` has no entry (``create``). A document written meanwhile (409) is left as it
        is: the later write wins. Returns the ids written."""
        records = list(records)
        if not records:
            return []
        self._ensure_index()
        now = _now_ms()
        actions = []
        for r in records:
            action: dict[str, Any] = {"_op_type": "create", "_index": self._write, "_id": r.id,
                                      "_source": _document(r, now, self.attributes)}
            if r.id in expected:
                action["_op_type"] = "index"
                action["if_seq_no"], action["if_primary_term"] = expected[r.id]
            actions.append(action)
        written, conflicts = [], {}
        for item, action in zip(self._bulk(actions), actions, strict=True):
            if item.ok:
                written.append(item.id)
            elif item.status == 409:
                conflicts[item.id] = action["_source"]
            else:
                raise StoreRejected(f"OpenSearch refused record {item.id}: {item.status} {item.describe()}")
        # A 409 can answer the resend of this very write, whose first response was lost: the document
        # then holds exactly what was sent (its updated_at is this call's millisecond).
        if conflicts:
            fields = ("content_hash", "status", "updated_at")
            for doc in self._mget(conflicts, _source_includes=",".join(fields)):
                sent, stored = conflicts[doc["_id"]], doc.get("_source") or {}
                if all(stored.get(f) == sent[f] for f in fields):
                    written.append(doc["_id"])
        order = {r.id: n for n, r in enumerate(records)}
        return sorted(written, key=order.__getitem__)

    def get(self, image_id: str) -> ImageRecord | None:
        return self.get_many([image_id]).get(image_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, ImageRecord]:
        docs = self._mget(ids, _source_excludes=VECTOR_SOURCE)
        records = (to_record(doc["_source"], self.attributes) for doc in docs)
        return {record.id: record for record in records}

    def versions(self, ids: Iterable[str]) -> dict[str, Version]:
        """The version of each document that exists, by id, read in real time (``mget`` without
        sources): what :meth:`put_many_if` and :meth:`delete_many_if` hold a document to."""
        return {doc["_id"]: (doc["_seq_no"], doc["_primary_term"]) for doc in self._mget(ids, _source=False)}

    def _mget(self, ids: Iterable[str], **params: Any) -> Iterator[dict[str, Any]]:
        """The documents found among ``ids``, in chunks of ``_MGET_CHUNK``."""
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), _MGET_CHUNK):
            try:
                resp = self.retrying.call(self.client.mget, index=self._read,
                                          body={"ids": ids[start:start + _MGET_CHUNK]}, **params)
            except os_errors.NotFoundError:
                return
            for doc in resp["docs"]:
                if "error" in doc:
                    raise StoreUnavailable(f"reading {doc.get('_id')} failed: {doc['error']}")
                if doc.get("found"):
                    yield doc

    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]:
        """Every record behind the read alias (or the bound index), without vectors, through a
        scroll: the source of a reindex."""
        hits = helpers.scan(self.client, index=self._read, query={"query": {"match_all": {}}}, size=batch_size,
                            _source_excludes=VECTOR_SOURCE)
        yielded = 0
        try:
            for hit in hits:
                yielded += 1
                yield to_record(hit["_source"], self.attributes)
        except os_errors.NotFoundError as exc:
            # Before the first hit: no index, nothing to list. After it: the scroll context was lost
            # (a node restart, a shard moving), and ending quietly would pass a partial list off as
            # the whole one; a reindex deletes what such a list lacks.
            if yielded:
                raise StoreUnavailable(f"scrolling {self._read} lost its context after {yielded} records: {exc}") \
                    from exc
            return
        except os_errors.TransportError as exc:
            if failed_call_is_transient(exc):
                raise StoreUnavailable(f"scrolling {self._read} failed: {exc}") from exc
            raise

    def delete(self, image_id: str) -> ImageRecord | None:
        for _ in range(self.retrying.retries + 1):
            try:
                doc = self.retrying.call(self.client.get, index=self._read, id=image_id,
                                         _source_excludes=VECTOR_SOURCE)
            except os_errors.NotFoundError:
                return None
            if not doc.get("found"):
                return None
            (item,) = self._bulk([{"_op_type": "delete", "_index": self._write, "_id": image_id,
                                   "if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"]}])
            if item.ok:
                return to_record(doc["_source"], self.attributes)
            if item.status == 404:
                return None  # deleted by someone else meanwhile
            if item.status != 409:
                raise StoreRejected(f"OpenSearch refused to delete {image_id}: {item.status} {item.describe()}")
            # 409: changed since it was read; read again so the record returned is the one removed
        raise StoreUnavailable(f"{image_id} kept changing while being deleted")

    def delete_many_if(self, expected: Mapping[str, Version]) -> list[str]:
        """Delete each document only if it is still at the version ``expected`` holds for it; one
        written meanwhile (409) or already gone (404) is left. Returns the ids deleted."""
        actions = [{"_op_type": "delete", "_index": self._write, "_id": image_id, "if_seq_no": seq_no,
                    "if_primary_term": primary_term} for image_id, (seq_no, primary_term) in expected.items()]
        deleted = []
        for item in self._bulk(actions) if actions else []:
            if item.ok:
                deleted.append(item.id)
            elif item.status not in (404, 409):
                raise StoreRejected(f"OpenSearch refused to delete {item.id}: {item.status} {item.describe()}")
        return deleted

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
            "thumb_key": u.thumb_key, "width": int(u.width), "height": int(u.height),
            "taken_at": None if u.taken_at is None else epoch_ms(u.taken_at), "now": now}) for u in updates]
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

    def patch(self, image_id: str, changes: RecordPatch) -> ImageRecord | None:
        """One scripted ``update`` of the edited fields (never an upsert: a deleted record answers
        404 and stays deleted), then a real-time get of the result."""
        fields: dict[str, Any] = {}
        for name in PATCHABLE:
            value = getattr(changes, name)
            if value is not None or name in changes.clear:
                fields[name] = value
        if "tags" in fields:
            fields["tags"] = list(fields["tags"] or [])
        if "attributes" in fields:
            fields["attributes"] = _attributes_document(fields["attributes"] or {}, self.attributes)
        self._ensure_index()  # an attribute declared since the index was made gets its mapping first
        (item,) = self._bulk([self._update(image_id, PATCH_SCRIPT, {"fields": fields, "now": _now_ms()})])
        if item.status == 404:
            return None
        if not item.ok:
            raise StoreRejected(f"OpenSearch refused to edit {image_id}: {item.status} {item.describe()}")
        return self.get(image_id)

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


def epoch_ms(seconds: float) -> int:
    """Epoch seconds as the epoch milliseconds a ``date`` field holds."""
    return round(seconds * 1000)


def ms_bound(op: str, seconds: float) -> int:
    """A range bound in epoch seconds as whole milliseconds, with the same meaning for the
    millisecond values stored: ``gte 1.0004`` s is ``gte 1001`` ms, ``lte 1.0004`` s is ``lte 1000``
    (a bound within a microsecond of a whole millisecond is that millisecond: float noise)."""
    ms = seconds * 1000
    nearest = round(ms)
    if abs(ms - nearest) < 1e-3:
        return nearest
    return math.ceil(ms) if op in ("gte", "lt") else math.floor(ms)


def attribute_value(kind: AttributeType | None, value: Value) -> Value | int:
    """A typed attribute value as its field stores it (dates: epoch ms)."""
    if kind == AttributeType.DATE and not isinstance(value, bool | str):
        return epoch_ms(float(value))
    return value


def _attributes_document(values: dict[str, Value], schema: AttributeSchema) -> dict[str, Value | int]:
    return {name: attribute_value(schema.types.get(name), value) for name, value in values.items()}


def _attributes_record(source: dict[str, Any], schema: AttributeSchema) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for name, value in source.items():
        kind = schema.types.get(name)
        if value is None:
            continue
        if kind == AttributeType.DATE:
            out[name] = float(value) / 1000
        elif kind == AttributeType.NUMBER:
            out[name] = float(value)
        else:
            out[name] = value
    return out


def _document(record: ImageRecord, now_ms: int, schema: AttributeSchema) -> dict[str, Any]:
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
        "title": record.title,
        "description": record.description,
        "attributes": _attributes_document(record.attributes, schema),
        "caption_status": CaptionStatus.PENDING,
        "thumb_key": None,
        "width": None,
        "height": None,
        "image_model": None,
        "caption_model": None,
        "text_model": None,
        "created_at": epoch_ms(record.created_at),
        "updated_at": now_ms,
        "taken_at": None,  # read from the image by the embed stage, which put() starts again
    }


def to_record(source: dict[str, Any], schema: AttributeSchema) -> ImageRecord:
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
        title=source.get("title"),
        description=source.get("description"),
        attributes=_attributes_record(source.get("attributes") or {}, schema),
        caption_status=source.get("caption_status", CaptionStatus.PENDING),
        thumb_key=source.get("thumb_key"),
        width=source.get("width"),
        height=source.get("height"),
        image_model=source.get("image_model"),
        caption_model=source.get("caption_model"),
        text_model=source.get("text_model"),
        created_at=float(source["created_at"]) / 1000,
        updated_at=float(source["updated_at"]) / 1000,
        taken_at=None if source.get("taken_at") is None else float(source["taken_at"]) / 1000,
    )
