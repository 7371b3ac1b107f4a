"""Which physical index the store uses: versioned indices behind the read and write aliases, the
first index (created on the first write, its vector fields added by the first vector), and the
primitives a reindex needs. The design: ARCHITECTURE.md, "OpenSearch store", Index layout.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from imagesearch.stores.base import StoreUnavailable
from imagesearch.stores.opensearch.mapping import (
    VECTOR_FIELDS,
    Engine,
    index_body,
    index_meta,
    index_name,
    index_version,
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


class IndexLifecycle:
    """The index part of :class:`~imagesearch.stores.opensearch.OpenSearchStore`, which sets these
    attributes; the record and search parts build on it."""

    client: OpenSearch
    retrying: RetryingClient
    prefix: str
    engine: Engine
    dim: int | None
    model: str | None
    read_alias: str
    write_alias: str
    _index: str | None  # a physical index the store is bound to instead of the aliases
    _read: str
    _write: str
    _lock: threading.Lock
    _state: IndexState | None

    def indices(self) -> dict[str, set[str]]:
        """Physical indices under this prefix and the aliases each carries."""
        resp = self.retrying.call(self.client.indices.get_alias, index=f"{self.prefix}-*")
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
        self.retrying.call(self.client.indices.create, index=name, body=body)
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
        self.retrying.call(self.client.indices.update_aliases, body={"actions": actions})
        with self._lock:
            self._state = None
        return actions

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
        vector = mappings.get("properties", {}).get(VECTOR_FIELDS[VectorField.IMAGE], {})
        return IndexState(name, vector.get("dimension"), mappings.get("_meta", {}).get("model"))

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
            if vector_dim is not None and state.dim is None:
                body = {"properties": vector_properties(vector_dim, self.engine),
                        "_meta": index_meta(state.model or model, vector_dim, self.engine)}
                try:
                    self.retrying.call(self.client.indices.put_mapping, index=self._write, body=body)
                except os_errors.RequestError as exc:
                    # Fine if another process added them first (with any dimension: a vector
                    # that does not fit is then rejected per item); anything else is a bug.
                    state = self._load_state() or state
                    if state.dim is None:
                        raise StoreRejected(f"cannot add vector fields to {state.name}: {exc}") from exc
                else:
                    state = IndexState(state.name, vector_dim, state.model or model)
            self._state = state
            return state
