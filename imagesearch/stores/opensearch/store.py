"""The OpenSearch store, assembled from its index, record and search parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from opensearchpy import OpenSearch

from imagesearch.config import Settings
from imagesearch.stores.opensearch.lifecycle import IndexState
from imagesearch.stores.opensearch.mapping import Engine, space_type
from imagesearch.stores.opensearch.records import RecordOperations
from imagesearch.stores.opensearch.search import SearchOperations
from imagesearch.stores.opensearch.transport import RetryingClient, build_client


class OpenSearchStore(RecordOperations, SearchOperations):
    """The :class:`~imagesearch.stores.base.Store` for deployments past one machine (ARCHITECTURE.md,
    "OpenSearch store")."""

    def __init__(
        self,
        client: OpenSearch,
        prefix: str = "imagesearch",
        *,
        engine: Engine = "faiss",
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
        self.retrying = RetryingClient(client, retries=retries, backoff_s=backoff_s, backoff_max_s=backoff_max_s,
                                       chunk_size=chunk_size, sleep=sleep)
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
        self._space = space_type()
        self._lock = threading.Lock()
        self._state: IndexState | None = None
        self._warned_models: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenSearchStore:
        return cls(build_client(settings), settings.opensearch.index_prefix, engine=settings.opensearch.engine,
                   dim=settings.opensearch.dim)

    def for_index(self, index: str) -> OpenSearchStore:
        """The same store bound to one physical index (reads and writes), e.g. to fill a new
        index during a reindex before :meth:`swap_aliases` makes it live."""
        r = self.retrying
        return OpenSearchStore(self.client, self.prefix, engine=self.engine, dim=self.dim, model=self.model,
                               index=index, refresh=self.refresh, retries=r.retries, backoff_s=r.backoff_s,
                               backoff_max_s=r.backoff_max_s, chunk_size=r.chunk_size, sleep=r.sleep)

    def close(self) -> None:
        self.client.close()
