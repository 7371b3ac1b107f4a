"""Which physical index the store uses: versioned indices behind the read and write aliases, the
first index (created on the first write, its vector fields added by the first vector), and the
primitives a reindex needs. The design: ARCHITECTURE.md, "OpenSearch store", Index layout.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from imagesearch.attributes import AttributeSchema
from imagesearch.stores.base import StoreUnavailable
from imagesearch.stores.opensearch.mapping import (
    SCHEMA_VERSION,
    VECTOR_FIELDS,
    Engine,
    IndexSettings,
    VectorEncoding,
    index_body,
    index_meta,
    index_name,
    index_version,
    missing_properties,
    vector_properties,
)
from imagesearch.stores.opensearch.transport import RetryingClient, StoreRejected
from imagesearch.vocab import VectorField

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexState:
    """What this process knows about the index behind the write alias."""

    name: str
    dim: int | None
    model: str | None
    # Fields the store writes that the index does not map yet (added before the next write).
    missing: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION  # of the template the index was made from
    encoding: str = "fp32"  # of its vector fields, as its _meta records (fp32 before it did)


class IndexLifecycle:
    """The index part of :class:`~imagesearch.stores.opensearch.OpenSearchStore`, which sets these
    attributes; the record and search parts build on it."""

    client: OpenSearch
    retrying: RetryingClient
    prefix: str
    engine: Engine
    dim: int | None
    model: str | None
    attributes: AttributeSchema
    encoding: VectorEncoding
    index_settings: IndexSettings
    read_alias: str
    write_alias: str
    _index: str | None  # a physical index the store is bound to instead of the aliases
    _read: str
    _write: str
    _lock: threading.Lock
    _state: IndexState | None
    _warned_encodings: set[str]

    def indices(self) -> dict[str, set[str]]:
        """Physical indices under this prefix and the aliases each carries."""
        resp = self.retrying.call(self.client.indices.get_alias, index=f"{self.prefix}-*")
        return {name: set((body or {}).get("aliases", {})) for name, body in resp.items()}

    def create_index_for_model(self, model_identity: str | None, dim: int | None, *, aliases: bool = False,
                               version: int | None = None, bulk_load: bool = False) -> str:
        """Create the next versioned index for a model identity; returns its name. With
        ``aliases`` it is created already carrying the read and write aliases (first index only:
        later ones go live through :meth:`swap_aliases`). With ``bulk_load`` it starts with refresh
        off and no replicas, for a reindex to fill; :meth:`finish_bulk_load` gives it the live
        settings."""
        if version is None:
            versions = [index_version(self.prefix, name) for name in self.indices()]
            version = 1 + max((v for v in versions if v is not None), default=0)
        name = index_name(self.prefix, model_identity, version)
        body = index_body(model_identity, dim, self.engine, self.attributes, self.encoding, self.index_settings,
                          bulk_load=bulk_load)
        if aliases:
            body["aliases"] = {self.read_alias: {}, self.write_alias: {"is_write_index": True}}
        self.retrying.call(self.client.indices.create, index=name, body=body)
        log.info("created OpenSearch index %s (model %s, dim %s, engine %s, vectors %s%s)", name, model_identity, dim,
                 self.engine, self.encoding.kind, ", bulk load" if bulk_load else "")
        return name

    def finish_bulk_load(self, index: str, *, wait_s: float = 600.0) -> bool:
        """Give an index filled under :meth:`create_index_for_model` ``bulk_load`` its live
        replicas and refresh interval, refresh it, and wait up to ``wait_s`` for its replicas to
        be copied (so that :meth:`warm` reaches them too). Returns whether they all were in time;
        a cluster with too few nodes for the replicas never gets there, and a reindex goes on
        without them."""
        self.retrying.call(self.client.indices.put_settings, index=index, body={"index": self.index_settings.live()})
        self.retrying.call(self.client.indices.refresh, index=index)
        try:
            health = self.retrying.call(self.client.cluster.health, index=index, wait_for_status="green",
                                        timeout=f"{int(wait_s)}s", request_timeout=wait_s + 30)
        except os_errors.TransportError as exc:
            if exc.status_code != 408:  # 408: the wait timed out (the body says timed_out)
                raise
            health = exc.info if isinstance(exc.info, dict) else {"timed_out": True}
        ready = not health.get("timed_out") and health.get("status") == "green"
        if not ready:
            active = health.get("active_shards", 0)
            total = active + health.get("initializing_shards", 0) + health.get("unassigned_shards", 0)
            log.warning("%s is not green after %.0f s (%s active of %s shards); replicas still being copied "
                        "are not warmed and load their graphs on their first searches", index, wait_s, active, total)
        return ready

    def warm(self, index: str, *, timeout_s: float = 900.0) -> dict[str, int]:
        """Load the native k-NN graphs of every shard copy of ``index`` into memory
        (``GET /_plugins/_knn/warmup/<index>``), so its first searches do not pay for it; returns
        the response's shard counts. Only segments that exist now are loaded: call it after the
        last write and refresh. (A Lucene-engine index keeps its graphs in Lucene files, read through
        the page cache rather than loaded by this call.)"""
        resp = self.retrying.call(self.client.knn.warmup, index=index, request_timeout=timeout_s)
        shards = dict(resp.get("_shards") or {})
        if shards.get("failed"):
            log.warning("warming %s failed on %s of %s shards: %s", index, shards.get("failed"), shards.get("total"),
                        shards.get("failures"))
        return shards

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
        self.retrying.call(self.client.indices.update_aliases, body={"actions": actions})
        with self._lock:
            self._state = None
        return actions

    def block_writes(self, index: str) -> bool:
        """Refuse further writes to ``index`` (``PUT /<index>/_block/write``, which returns once the
        writes in flight on its shards are done), then refresh it, so that one scan sees every write
        it took: the old index of a reindex, after the swap. Returns whether the block is in place;
        if OpenSearch refuses it (a role without the privilege), the index is still refreshed and
        the refusal logged."""
        try:
            resp = self.retrying.call(self.client.indices.add_block, index=index, block="write")
        except os_errors.TransportError as exc:  # a refusal (transient errors end as StoreUnavailable)
            log.warning("could not block writes to %s (%s); a write still in flight to it may be missed", index, exc)
            blocked = False
        else:
            statuses = resp.get("indices") or []
            blocked = bool(resp.get("acknowledged")) and bool(statuses) and all(s.get("blocked") for s in statuses)
            if not blocked:
                log.warning("the write block of %s was not confirmed (%s); a write still in flight to it may be missed",
                            index, resp)
        self.retrying.call(self.client.indices.refresh, index=index)
        return blocked

    def unblock_writes(self, index: str) -> None:
        """Lift the block :meth:`block_writes` set, so the index takes writes again (a rollback)."""
        self.retrying.call(self.client.indices.put_settings, index=index,
                           body={"index": {"blocks": {"write": False}}})

    def _forget_index(self) -> None:
        """The write index vanished or moved: find it again on the next write."""
        self._state = None

    def _load_state(self) -> IndexState | None:
        try:
            resp = self.retrying.call(self.client.indices.get_mapping, index=self._write)
        except os_errors.NotFoundError:
            return None
        if len(resp) != 1:
            raise StoreUnavailable(f"{self._write} resolves to {len(resp)} indices: {sorted(resp)}")
        ((name, body),) = resp.items()
        mappings = body.get("mappings", {})
        properties = mappings.get("properties", {})
        meta = mappings.get("_meta", {})
        vector = properties.get(VECTOR_FIELDS[VectorField.IMAGE], {})
        encoding = meta.get("vector_encoding", "fp32")
        if encoding != self.encoding.kind and name not in self._warned_encodings:
            self._warned_encodings.add(name)
            log.warning("%s holds %s vectors but IMAGESEARCH_OPENSEARCH_VECTOR_ENCODING is %s: the setting applies to "
                        "new indices; run `imagesearch reindex` to build one", name, encoding, self.encoding.kind)
        return IndexState(name, vector.get("dimension"), meta.get("model"),
                          missing_properties(properties, self.attributes), meta.get("schema_version", 1), encoding)

    def _bootstrap(self) -> IndexState:
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

    def _ensure_index(self, vector_dim: int | None = None, model: str | None = None) -> IndexState:
        """The write index, created if need be, with vector fields if a vector is being written."""
        with self._lock:
            state = self._state or self._load_state() or self._bootstrap()
            if state.missing:
                state = self._add_fields(state)
            if vector_dim is not None and state.dim is None:
                # The encoding is the one configured now: the index was made without vector fields.
                body = {"properties": vector_properties(vector_dim, self.engine, self.encoding),
                        "_meta": index_meta(state.model or model, vector_dim, self.engine, state.schema_version,
                                            self.encoding)}
                try:
                    self.retrying.call(self.client.indices.put_mapping, index=self._write, body=body)
                except os_errors.RequestError as exc:
                    # Fine if another process added them first (with any dimension: a vector
                    # that does not fit is then rejected per item); anything else is a bug.
                    state = self._load_state() or state
                    if state.dim is None:
                        raise StoreRejected(f"cannot add vector fields to {state.name}: {exc}") from exc
                else:
                    state = replace(state, dim=vector_dim, model=state.model or model)
            self._state = state
            return state

    def _add_fields(self, state: IndexState) -> IndexState:
        """Map the fields an older index lacks (title, taken_at, newly declared attributes) before
        writing: the mapping is strict, so a document using them would be refused."""
        try:
            self.retrying.call(self.client.indices.put_mapping, index=self._write,
                               body={"properties": state.missing})
        except os_errors.RequestError as exc:
            # Another process may have added them first; anything still missing is a real refusal.
            reloaded = self._load_state() or state
            if reloaded.missing:
                raise StoreRejected(f"cannot add the fields {sorted(reloaded.missing)} to {state.name}: {exc}") from exc
            return reloaded
        log.info("added the fields %s to the mapping of %s", sorted(state.missing), state.name)
        return replace(state, missing={})
