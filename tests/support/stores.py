"""A store for each backend the contract runs on: embedded always, OpenSearch when ``OPENSEARCH_URL`` is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagesearch.attributes import AttributeSchema
from imagesearch.config import OpenSearchSettings, Settings, StoreSettings
from imagesearch.stores.base import Store
from imagesearch.stores.embedded import EmbeddedStore

BACKENDS = ("embedded", "opensearch")
NO_OPENSEARCH = (
    "OPENSEARCH_URL is not set: the contract ran on the embedded store only "
    "(set OPENSEARCH_URL=http://host:9200 to run it on OpenSearch too)"
)


def open_test_store(backend: str, folder: Path, attributes: AttributeSchema | None = None) -> Iterator[Store]:
    """The store, removed afterwards (OpenSearch: under a random index prefix, refresh on every write).
    ``attributes``: what OpenSearch maps explicitly before its first write creates the index (the
    embedded store keeps any typed value)."""
    if backend == "embedded":
        embedded = EmbeddedStore(folder / "store.sqlite3")
        yield embedded
        embedded.close()
        return
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        pytest.skip(NO_OPENSEARCH)
    from imagesearch.stores.opensearch import OpenSearchStore, build_client

    engine = os.environ.get("OPENSEARCH_ENGINE", "faiss")
    settings = Settings(
        _env_file=None,
        storage=StoreSettings(backend="opensearch"),
        opensearch=OpenSearchSettings(
            url=url,
            username=os.environ.get("OPENSEARCH_USERNAME") or None,
            password=os.environ.get("OPENSEARCH_PASSWORD") or None,
            aws_region=os.environ.get("OPENSEARCH_AWS_REGION") or None,
            verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "true").lower() != "false",
            engine=engine,
        ),
    )
    store = OpenSearchStore(build_client(settings), f"imagesearch-test-{uuid.uuid4().hex[:10]}", engine=engine,
                            attributes=attributes, refresh=True, retries=2, backoff_s=0.2)
    try:
        yield store
    finally:
        for name in store.indices():
            store.client.indices.delete(index=name)
        store.close()
