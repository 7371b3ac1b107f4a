"""The OpenSearch store: the same interface as the embedded store, for deployments past one machine.

Layout. Records live in a versioned physical index per model identity
(``<prefix>-<model slug>-v<N>``, see :mod:`imagesearch.stores.opensearch_mapping`) reached only
through two aliases: ``<prefix>-read`` for every read and ``<prefix>-write`` for every write. A
reindex builds a new index (:meth:`OpenSearchStore.create_index_for_model`, then
:meth:`OpenSearchStore.for_index` to fill it) and moves both aliases in one atomic ``POST
/_aliases`` (:meth:`OpenSearchStore.swap_aliases`).

The first index. ``put`` stores a queued record before any vector exists, so an index is needed
before the embedding dimension may be known. On the first write the store creates
``<prefix>-<slug>-v1`` together with both aliases (one request, so two processes racing to do it
converge: the loser sees ``resource_already_exists_exception`` and uses the winner's index). If
the dimension is known (``opensearch_dim`` setting or ``dim=``) the vector fields are created at
once; otherwise the index is created with ``index.knn: true`` and every other field, and the
first vector write adds the two ``knn_vector`` fields with ``PUT _mapping`` using that vector's
length, recording the model identity in the index ``_meta``. A later vector of another dimension
is rejected by OpenSearch (400) and recorded as that image's failure.

Conditional updates. ``set_image_vectors``, ``set_captions`` and ``set_failed`` are bulk ``update``
actions running a painless script that changes the document only when its ``content_hash`` equals
the hash the worker processed, else sets ``ctx.op = 'noop'``; there is no ``upsert``, so a deleted
record answers 404 ``document_missing_exception`` and is never resurrected. OpenSearch runs the
script against the current version and writes only if that version is still current (the update
API's internal optimistic concurrency; ``retry_on_conflict`` re-runs the script on a conflict),
so a re-upload racing an old worker cannot be overwritten. Only ``result: updated`` counts as
updated. ``delete`` reads the document and deletes it with ``if_seq_no``/``if_primary_term`` so
the record it returns is exactly the one removed.

Failures. Every write goes through ``opensearch.helpers.streaming_bulk`` with
``raise_on_error=False``: each item's outcome is inspected, so ``errors: true`` never passes
unnoticed. Items (or whole requests) answered 429, 5xx or not at all are retried with capped
exponential backoff and jitter; when retries run out :class:`StoreUnavailable` tells the caller
(a Celery task) to retry later. A 400 on a vector or caption update (dimension mismatch, mapping
error) is not retried: it is written to the record as the image's failure. The client is built
with the transport's own retries off so that there is exactly one retry policy.

Visibility. Reads by id (``get``, ``get_many``, ``vector``, ``delete``) are real-time; searches
(``knn``, ``keyword``, ``counts``) see writes after the next refresh (1 s by default) unless the
store is built with ``refresh=True`` or ``"wait_for"``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from imagesearch.config import Settings
from imagesearch.records import ImageRecord, VectorField
from imagesearch.stores.base import CaptionUpdate, Filters, ImageVectorUpdate, StoreUnavailable
from imagesearch.stores.opensearch_mapping import (
    MODEL_FIELDS,
    VECTOR_FIELDS,
    index_body,
    index_meta,
    index_name,
    index_version,
    score_to_cosine,
    space_type,
    vector_properties,
)

log = logging.getLogger(__name__)

_VECTOR_SOURCE = list(VECTOR_FIELDS.values())
_WORD = re.compile(r"\w+", re.UNICODE)
_MGET_CHUNK = 500

# Painless scripts: constant sources (compiled once and cached by OpenSearch), values as params.
IMAGE_SCRIPT = """\
if (ctx._source.content_hash == params.content_hash) {
  ctx._source.status = 'indexed';
  ctx._source.error = null;
  ctx._source.image_vector = params.vector;
  ctx._source.image_model = params.model;
  ctx._source.thumb_key = params.thumb_key;
  ctx._source.width = params.width;
  ctx._source.height = params.height;
  ctx._source.updated_at = params.now;
} else {
  ctx.op = 'noop';
}"""

CAPTION_SCRIPT = """\
if (ctx._source.content_hash == params.content_hash) {
  ctx._source.caption = params.caption;
  ctx._source.caption_status = 'done';
  ctx._source.caption_vector = params.vector;
  ctx._source.caption_model = params.caption_model;
  ctx._source.text_model = params.text_model;
  ctx._source.updated_at = params.now;
} else {
  ctx.op = 'noop';
}"""

FAILED_SCRIPT = """\
if (ctx._source.content_hash == params.content_hash) {
  ctx._source[params.status_field] = 'failed';
  ctx._source.error = params.error;
  ctx._source.updated_at = params.now;
} else {
  ctx.op = 'noop';
}"""


class StoreRejected(RuntimeError):
    """OpenSearch refused a write for a reason that retrying cannot fix (a 4xx other than 429)."""


@dataclass(frozen=True)
class _Item:
    """The final outcome of one bulk action."""

    op: str
    id: str
    status: int | str
    result: str | None
    error: Any

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300

    @property
    def error_type(self) -> str:
        return self.error.get("type", "") if isinstance(self.error, dict) else ""

    def describe(self) -> str:
        if isinstance(self.error, dict):
            return f"{self.error.get('type')}: {self.error.get('reason')}"
        return str(self.error)


@dataclass(frozen=True)
class _IndexState:
    """What this process knows about the index behind the write alias."""

    name: str
    dim: int | None
    model: str | None


def _transient(status: int | str) -> bool:
    """429, 5xx and no answer at all (opensearch-py reports connection errors as 'N/A')."""
    return not isinstance(status, int) or status == 429 or status >= 500


def build_client(settings: Settings) -> OpenSearch:
    """An opensearch-py client for the settings: basic auth, or SigV4 signing with boto3's
    credential chain (Amazon OpenSearch Service ``es``, or ``aoss``) when a region is set."""
    kwargs: dict[str, Any] = {
        "hosts": [settings.opensearch_url],
        "verify_certs": settings.opensearch_verify_certs,
        # The store retries with backoff itself; the transport would retry at once, unpaced.
        "max_retries": 0,
        "retry_on_timeout": False,
        "timeout": 30,
    }
    if settings.opensearch_aws_region:
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ValueError("IMAGESEARCH_OPENSEARCH_AWS_REGION is set but boto3 found no AWS credentials")
        kwargs["http_auth"] = Urllib3AWSV4SignerAuth(credentials, settings.opensearch_aws_region,
                                                     settings.opensearch_aws_service)
    elif settings.opensearch_username:
        kwargs["http_auth"] = (settings.opensearch_username, settings.opensearch_password or "")
    return OpenSearch(**kwargs)


class OpenSearchStore:
    def __init__(
        self,
        client: OpenSearch,
        prefix: str = "imagesearch",
        *,
        engine: Literal["faiss", "lucene"] = "faiss",
        dim: int | None = None,
        model: str | None = None,
        index: str | None = None,
        refresh: bool | Literal["wait_for"] = False,
        retries: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        chunk_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``dim``/``model``: used for the first index if this process has to create it.
        ``index``: bind to one physical index instead of the aliases (see :meth:`for_index`).
        ``refresh``: passed to every bulk write (tests; production leaves the 1 s refresh)."""
        self.client = client
        self.prefix = prefix
        self.engine = engine
        self.dim = dim
        self.model = model
        self.read_alias = f"{prefix}-read"
        self.write_alias = f"{prefix}-write"
        self._index = index
        self._read = index or self.read_alias
        self._write = index or self.write_alias
        self.refresh = refresh
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.chunk_size = chunk_size
        self._sleep = sleep
        self._space = space_type()
        self._lock = threading.Lock()
        self._state: _IndexState | None = None
        self._warned_models: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> "OpenSearchStore":
        return cls(build_client(settings), settings.opensearch_index_prefix, engine=settings.opensearch_engine,
                   dim=settings.opensearch_dim)

    def for_index(self, index: str) -> "OpenSearchStore":
        """The same store bound to one physical index (reads and writes), e.g. to fill a new
        index during a reindex before :meth:`swap_aliases` makes it live."""
        return OpenSearchStore(self.client, self.prefix, engine=self.engine, dim=self.dim, model=self.model,
                               index=index, refresh=self.refresh, retries=self.retries, backoff_s=self.backoff_s,
                               backoff_max_s=self.backoff_max_s, chunk_size=self.chunk_size, sleep=self._sleep)

    def close(self) -> None:
        self.client.close()

    # -- requests and retries ------------------------------------------------------------------

    def _delay(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (half fixed, half random)."""
        cap = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call, retried on 429, 5xx and connection errors; other errors propagate."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self._delay(attempt))
            try:
                return fn(*args, **kwargs)
            except os_errors.TransportError as exc:
                if not _transient(exc.status_code):
                    raise
                last = exc
                log.warning("OpenSearch %s failed (%s), attempt %d", getattr(fn, "__name__", fn), exc, attempt + 1)
        raise StoreUnavailable(f"OpenSearch did not succeed after {self.retries + 1} attempts: {last}") from last

    def _bulk(self, actions: list[dict[str, Any]]) -> list[_Item]:
        """Send bulk actions; return one final outcome per action, in order.

        Items answered 429/5xx (or lost with their whole request) are sent again after a backoff;
        409 on an update (a conflict left after ``retry_on_conflict``) too. Everything else is
        final and returned for the caller to interpret.
        """
        params: dict[str, Any] = {}
        if self.refresh:
            params["refresh"] = self.refresh
        if self._index is None:
            params["require_alias"] = True  # never auto-create a concrete index named like an alias
        final: dict[int, _Item] = {}
        pending = list(range(len(actions)))
        last: _Item | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self._delay(attempt))
            retry: list[int] = []
            results = helpers.streaming_bulk(
                self.client, [actions[i] for i in pending], chunk_size=self.chunk_size, max_retries=0,
                raise_on_error=False, raise_on_exception=False, yield_ok=True, **params)
            answered = 0
            for i, (_, info) in zip(pending, results):
                answered += 1
                ((op, body),) = info.items()
                item = _Item(op, str(body.get("_id", actions[i].get("_id"))), body.get("status", "N/A"),
                             body.get("result"), body.get("error"))
                if item.error_type == "index_not_found_exception":
                    self._state = None
                    raise StoreUnavailable(f"{self._write} does not exist: {item.describe()}")
                if _transient(item.status) or (item.status == 409 and op == "update"):
                    retry.append(i)
                    last = item
                else:
                    final[i] = item
            retry.extend(pending[answered:])  # a response with fewer items than were sent
            if not retry:
                return [final[i] for i in range(len(actions))]
            log.warning("%d of %d bulk item(s) to retry (last: %s %s), attempt %d", len(retry), len(pending),
                        last.status if last else "no answer", last.describe() if last else "", attempt + 1)
            pending = retry
        raise StoreUnavailable(f"{len(pending)} bulk item(s) still failing after {self.retries + 1} attempts; "
                               f"last: {last.status if last else 'no answer'} {last.describe() if last else ''}")

    # -- indices and aliases -------------------------------------------------------------------

    def indices(self) -> dict[str, set[str]]:
        """Physical indices under this prefix and the aliases each carries."""
        resp = self._call(self.client.indices.get_alias, index=f"{self.prefix}-*")
        return {name: set((body or {}).get("aliases", {})) for name, body in resp.items()}

    def create_index_for_model(self, model_identity: str | None, dim: int | None, *, aliases: bool = False,
                               version: int | None = None) -> str:
        """Create the next versioned index for a model identity; returns its name. With
        ``aliases`` it is created already carrying the read and write aliases (first index only:
        later ones go live through :meth:`swap_aliases`)."""
        if version is None:
            versions = [index_version(self.prefix, name) for name in self.indices()]
            version = 1 + max((v for v in versions if v is not None), default=0)
        name = index_name(self.prefix, model_identity, version)
        body = index_body(model_identity, dim, self.engine)
        if aliases:
            body["aliases"] = {self.read_alias: {}, self.write_alias: {"is_write_index": True}}
        self._call(self.client.indices.create, index=name, body=body)
        log.info("created OpenSearch index %s (model %s, dim %s, engine %s)", name, model_identity, dim, self.engine)
        return name

    def swap_aliases(self, new_index: str) -> list[dict[str, Any]]:
        """Point the read and write aliases at ``new_index`` in one atomic ``POST /_aliases``;
        returns the actions sent. The old index is left in place (delete it when satisfied)."""
        actions: list[dict[str, Any]] = []
        for name, aliases in sorted(self.indices().items()):
            for alias in (self.read_alias, self.write_alias):
                if alias in aliases and name != new_index:
                    actions.append({"remove": {"index": name, "alias": alias}})
        actions.append({"add": {"index": new_index, "alias": self.read_alias}})
        actions.append({"add": {"index": new_index, "alias": self.write_alias, "is_write_index": True}})
        self._call(self.client.indices.update_aliases, body={"actions": actions})
        with self._lock:
            self._state = None
        return actions

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
            if _transient(exc.status_code):
                raise StoreUnavailable(f"scrolling {self._read} failed: {exc}") from exc
            raise

    def _load_state(self) -> _IndexState | None:
        try:
            resp = self._call(self.client.indices.get_mapping, index=self._write)
        except os_errors.NotFoundError:
            return None
        if len(resp) != 1:
            raise StoreUnavailable(f"{self._write} resolves to {len(resp)} indices: {sorted(resp)}")
        ((name, body),) = resp.items()
        mappings = body.get("mappings", {})
        vector = mappings.get("properties", {}).get(VECTOR_FIELDS["image"], {})
        return _IndexState(name, vector.get("dimension"), mappings.get("_meta", {}).get("model"))

    def _bootstrap(self) -> _IndexState:
        """No write alias: create version 1 with both aliases. The name is deterministic, so of
        several processes doing this at once one creates it and the others find it."""
        if self._index is not None:
            raise StoreUnavailable(f"index {self._index} does not exist")
        first = index_name(self.prefix, self.model, 1)
        try:
            self.create_index_for_model(self.model, self.dim, aliases=True, version=1)
        except os_errors.RequestError as exc:
            if exc.error != "resource_already_exists_exception":
                raise
        state = self._load_state()
        if state is None:  # v1 exists but the aliases were removed: do not guess where they belong
            raise StoreUnavailable(f"alias {self.write_alias} is missing although {first} exists; "
                                   "point the aliases at the right index (swap_aliases) before writing")
        return state

    def _ensure_index(self, vector_dim: int | None = None, model: str | None = None) -> _IndexState:
        """The write index, created if need be, with vector fields if a vector is being written."""
        with self._lock:
            state = self._state or self._load_state() or self._bootstrap()
            if vector_dim is not None and state.dim is None:
                body = {"properties": vector_properties(vector_dim, self.engine),
                        "_meta": index_meta(state.model or model, vector_dim, self.engine)}
                try:
                    self._call(self.client.indices.put_mapping, index=self._write, body=body)
                except os_errors.RequestError as exc:
                    # Fine if another process added them first (with any dimension: a vector
                    # that does not fit is then rejected per item); anything else is a bug.
                    state = self._load_state() or state
                    if state.dim is None:
                        raise StoreRejected(f"cannot add vector fields to {state.name}: {exc}") from exc
                else:
                    state = _IndexState(state.name, vector_dim, state.model or model)
            self._state = state
            return state

    # -- records -------------------------------------------------------------------------------

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
                resp = self._call(self.client.mget, index=self._read, body={"ids": ids[start:start + _MGET_CHUNK]},
                                  _source_excludes=_VECTOR_SOURCE)
            except os_errors.NotFoundError:
                return out
            for doc in resp["docs"]:
                if "error" in doc:
                    raise StoreUnavailable(f"reading {doc.get('_id')} failed: {doc['error']}")
                if doc.get("found"):
                    record = _to_record(doc["_source"])
                    out[record.id] = record
        return out

    def delete(self, image_id: str) -> ImageRecord | None:
        for _ in range(self.retries + 1):
            try:
                doc = self._call(self.client.get, index=self._read, id=image_id, _source_excludes=_VECTOR_SOURCE)
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

    def _update(self, image_id: str, script: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"_op_type": "update", "_index": self._write, "_id": image_id, "retry_on_conflict": 3,
                "script": {"source": script, "lang": "painless", "params": params}}

    def _apply(self, actions: list[dict[str, Any]], stage: str, hashes: list[str]) -> list[str]:
        """Run conditional updates; ids updated are returned, 400s recorded as failures."""
        done: list[str] = []
        rejected: list[tuple[str, str, str, str]] = []
        for item, content_hash in zip(self._bulk(actions), hashes):
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

    def _mark_failed(self, failures: list[tuple[str, str, str, str]]) -> list[_Item]:
        if not failures:
            return []
        now = _now_ms()
        return self._bulk([
            self._update(image_id, FAILED_SCRIPT, {
                "content_hash": content_hash, "now": now, "error": f"{stage}: {error}",
                "status_field": "status" if stage == "embed" else "caption_status"})
            for image_id, content_hash, stage, error in failures])

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
            "content_hash": u.content_hash, "vector": _floats(u.vector), "model": u.model, "thumb_key": u.thumb_key,
            "width": int(u.width), "height": int(u.height), "now": now}) for u in updates]
        return self._apply(actions, "embed", [u.content_hash for u in updates])

    def set_captions(self, updates: list[CaptionUpdate]) -> list[str]:
        if not updates:
            return []
        self._ensure_index(len(updates[0].vector), updates[0].text_model)
        now = _now_ms()
        actions = [self._update(u.id, CAPTION_SCRIPT, {
            "content_hash": u.content_hash, "caption": u.caption, "vector": _floats(u.vector),
            "caption_model": u.caption_model, "text_model": u.text_model, "now": now}) for u in updates]
        return self._apply(actions, "caption", [u.content_hash for u in updates])

    def set_failed(self, image_id: str, content_hash: str, stage: str, error: str) -> None:
        self._ensure_index()
        (item,) = self._mark_failed([(image_id, content_hash, stage, error)])
        if not item.ok and item.status != 404:
            raise StoreRejected(f"OpenSearch refused to mark {image_id} failed: {item.status} {item.describe()}")

    def counts(self) -> dict[str, int]:
        out = {"queued": 0, "indexed": 0, "failed": 0, "caption_pending": 0}
        body = {
            "size": 0,
            "aggs": {
                "status": {"terms": {"field": "status", "size": 10}},
                "caption_pending": {"filter": {"bool": {"filter": [
                    {"term": {"status": "indexed"}}, {"term": {"caption_status": "pending"}}]}}},
            },
        }
        try:
            resp = self._call(self.client.search, index=self._read, body=body)
        except os_errors.NotFoundError:
            return out
        for bucket in resp["aggregations"]["status"]["buckets"]:
            out[bucket["key"]] = bucket["doc_count"]
        out["caption_pending"] = resp["aggregations"]["caption_pending"]["doc_count"]
        return out

    def stale_queued(self, before: float, limit: int = 1000) -> list[str]:
        body = {
            "size": limit,
            "_source": False,
            "query": {"bool": {"filter": [{"term": {"status": "queued"}},
                                          {"range": {"updated_at": {"lt": int(before * 1000)}}}]}},
            "sort": ["updated_at"],  # ascending: oldest first
        }
        try:
            resp = self._call(self.client.search, index=self._read, body=body)
        except os_errors.NotFoundError:
            return []
        return [hit["_id"] for hit in resp["hits"]["hits"]]

    # -- search --------------------------------------------------------------------------------

    def vector(self, image_id: str, field: VectorField) -> tuple[np.ndarray, str] | None:
        vector_field, model_field = VECTOR_FIELDS[field], MODEL_FIELDS[field]
        try:
            doc = self._call(self.client.get, index=self._read, id=image_id,
                             _source_includes=[vector_field, model_field])
        except os_errors.NotFoundError:
            return None
        source = doc.get("_source") or {}
        if not doc.get("found") or source.get(vector_field) is None:
            return None
        return np.asarray(source[vector_field], dtype=np.float32), source.get(model_field)

    @staticmethod
    def _filter(filters: Filters, *clauses: dict[str, Any]) -> dict[str, Any]:
        terms = [{"term": {"status": "indexed"}}, *clauses]
        for name, value in (("tenant", filters.tenant), ("collection", filters.collection)):
            if value is not None:
                terms.append({"term": {name: value}})
        query: dict[str, Any] = {"filter": terms}
        if filters.exclude_id is not None:
            query["must_not"] = [{"term": {"id": filters.exclude_id}}]
        return {"bool": query}

    def _search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            resp = self._call(self.client.search, index=self._read, body=body, allow_partial_search_results=False)
        except os_errors.NotFoundError:
            return []
        return resp["hits"]["hits"]

    def knn(self, field: VectorField, query: np.ndarray, k: int, model: str, filters: Filters,
            min_score: float | None = None) -> list[tuple[str, float]]:
        """Approximate (HNSW) neighbours; the filter sits inside the ``knn`` clause, so it is
        applied while searching (efficient filtering) and ``k`` results survive it."""
        if k <= 0:
            return []
        vector_field = VECTOR_FIELDS[field]
        body = {
            "size": k,
            "_source": False,
            "query": {"knn": {vector_field: {
                "vector": _floats(query), "k": k,
                "filter": self._filter(filters, {"term": {MODEL_FIELDS[field]: model}}),
            }}},
        }
        try:
            hits = self._search(body)
        except os_errors.RequestError:
            state = self._load_state()
            if state is not None and state.dim is None:
                return []  # no vector has been written yet: the field does not exist
            raise
        out = []
        for hit in hits:
            cosine = score_to_cosine(float(hit["_score"]), self._space)
            if min_score is None or cosine >= min_score:
                out.append((hit["_id"], cosine))
        return out

    def keyword(self, text: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        """BM25 on the caption (``english`` analyzer), same filters as knn."""
        if k <= 0 or not _WORD.search(text):
            return []
        query = self._filter(filters)
        query["bool"]["must"] = [{"match": {"caption": {"query": text}}}]
        hits = self._search({"size": k, "_source": False, "query": query})
        return [(hit["_id"], float(hit["_score"])) for hit in hits]


# -- documents ----------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _floats(vector: np.ndarray) -> list[float]:
    """float32 values as JSON numbers (each float32 is exactly representable as a double)."""
    return np.asarray(vector, dtype=np.float32).ravel().tolist()


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
        "status": "queued",
        "error": None,
        "caption": None,
        "caption_status": "pending",
        "thumb_key": None,
        "width": None,
        "height": None,
        "image_model": None,
        "caption_model": None,
        "text_model": None,
        "created_at": int(round(record.created_at * 1000)),
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
        caption_status=source.get("caption_status", "pending"),
        thumb_key=source.get("thumb_key"),
        width=source.get("width"),
        height=source.get("height"),
        image_model=source.get("image_model"),
        caption_model=source.get("caption_model"),
        text_model=source.get("text_model"),
        created_at=float(source["created_at"]) / 1000,
        updated_at=float(source["updated_at"]) / 1000,
    )
