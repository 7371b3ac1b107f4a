"""The OpenSearch store, assembled from its index, record and search parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from opensearchpy import OpenSearch

from imagesearch.attributes import AttributeSchema
from imagesearch.config import Settings
from imagesearch.stores.opensearch.lifecycle import IndexState
from imagesearch.stores.opensearch.mapping import Engine, IndexSettings, VectorEncoding, space_type
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
        attributes: AttributeSchema | None = None,
        encoding: VectorEncoding | None = None,
        index_settings: IndexSettings | None = None,
        index: str | None = None,
        refresh: bool | Literal["wait_for"] = False,
        retries: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        chunk_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``dim``/``model``: used for the first index if this process has to create it.
        ``attributes``: the declared attributes (``IMAGESEARCH_ATTRIBUTES``), mapped explicitly;
        an index made before one was declared gets its field on the next write.
        ``encoding``: of the vector fields of the indices this store creates (fp32 by default;
        checked against ``engine`` here). ``index_settings``: their shards, replicas and refresh
        interval (OpenSearch's defaults: cluster shards, 1 replica, 1 s).
        ``index``: bind to one physical index instead of the aliases (see :meth:`for_index`).
        ``refresh``: passed to every bulk write (tests; production leaves the 1 s refresh)."""
        self.client = client
        self.retrying = RetryingClient(client, retries=retries, backoff_s=backoff_s, backoff_max_s=backoff_max_s,
                                       chunk_size=chunk_size, sleep=sleep)
        self.prefix = prefix
        self.engine = engine
        self.dim = dim
        self.model = model
        self.attributes = attributes or AttributeSchema({})
        self.encoding = encoding or VectorEncoding()
        self.encoding.check(engine, space_type())
        self.index_settings = index_settings or IndexSettings()
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
        self._warned_encodings: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenSearchStore:
        opensearch = settings.opensearch
        return cls(build_client(settings), opensearch.index_prefix, engine=opensearch.engine, dim=opensearch.dim,
                   attributes=settings.ingest.attribute_schema(), encoding=VectorEncoding.from_settings(opensearch),
                   index_settings=IndexSettings.from_settings(opensearch))

    def for_index(self, index: str) -> OpenSearchStore:
        """The same store bound to one physical index (reads and writes), e.g. to fill a new
        index during a reindex before :meth:`swap_aliases` makes it live."""
        r = self.retrying
        return OpenSearchStore(self.client, self.prefix, engine=self.engine, dim=self.dim, model=self.model,
                               attributes=self.attributes, encoding=self.encoding, index_settings=self.index_settings,
                               index=index, refresh=self.refresh, retries=r.retries, backoff_s=r.backoff_s,
                               backoff_max_s=r.backoff_max_s, chunk_size=r.chunk_size, sleep=r.sleep)

    def close(self) -> None:
        self.client.close()
