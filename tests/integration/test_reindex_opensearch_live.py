"""The primitives of a reindex's pass after the swap, on a real OpenSearch cluster: what the
request-contract tests (tests/unit/test_reindex.py) can only assume of the answers. Runs only when
``OPENSEARCH_URL`` is set (tests/support/stores.py), under its own random index prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagesearch.stores.opensearch import OpenSearchStore, StoreRejected
from tests.support.factories import record
from tests.support.stores import open_test_store


@pytest.fixture
def opensearch(tmp_path: Path) -> Iterator[OpenSearchStore]:
    yield from open_test_store("opensearch", tmp_path)


def test_conditional_writes_hold_a_document_to_the_version_read(opensearch: OpenSearchStore) -> None:
    opensearch.put(record("live"))  # the first index, behind both aliases
    target = opensearch.for_index(opensearch.create_index_for_model("clip:live/next", 8))
    target.put_many([record("a"), record("b")])
    read = target.versions(["a", "b", "never"])
    assert set(read) == {"a", "b"}
    assert target.put_many_if([record("a", content_hash="h2")], {"a": read["a"]}) == ["a"]
    # The version read is stale now: a write over it is refused, and the later write is kept.
    assert target.put_many_if([record("a", content_hash="h3")], {"a": read["a"]}) == []
    assert target.get("a").content_hash == "h2"
    # No entry in ``expected``: written only where nothing is.
    assert target.put_many_if([record("b", content_hash="h9"), record("c")], {}) == ["c"]
    assert target.get("b").content_hash == "h"
    assert target.delete_many_if({"a": read["a"], "b": read["b"], "never": (0, 1)}) == ["b"]
    assert set(target.get_many(["a", "b", "c"])) == {"a", "c"}


def test_a_write_blocked_index_refuses_writes_until_unblocked(opensearch: OpenSearchStore) -> None:
    opensearch.put(record("before"))
    (old,) = opensearch.indices()
    assert opensearch.block_writes(old) is True
    with pytest.raises(StoreRejected, match="403"):
        opensearch.put(record("during"))
    opensearch.unblock_writes(old)
    opensearch.put(record("after"))
    assert set(opensearch.get_many(["before", "during", "after"])) == {"before", "after"}
