"""The store contract: one behaviour, every backend.

Runs on the embedded store always, and on OpenSearch whenever ``OPENSEARCH_URL`` is set (e.g.
``http://127.0.0.1:9200``; optional ``OPENSEARCH_USERNAME``/``OPENSEARCH_PASSWORD``,
``OPENSEARCH_VERIFY_CERTS=false``, ``OPENSEARCH_AWS_REGION`` for SigV4, ``OPENSEARCH_ENGINE=lucene``):
the ``store`` fixture (tests/integration/conftest.py).
Each OpenSearch test works under its own random index prefix, with ``refresh=True`` so searches
see writes at once, and deletes its indices afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch.records import ImageRecord
from imagesearch.stores.base import Filters, Store
from tests.support.factories import caption_update, record, vector_update

MODEL = "clip:contract/a"
OTHER_MODEL = "clip:contract/b"
DIM = 8
def rec(
    image_id: str, content_hash: str = "h1", tenant: str = "t1", collection: str = "c1", **kwargs: object
) -> ImageRecord:
    """A record with every field set (blob ``originals/<id>``), as the tests below read them back."""
    return record(image_id, content_hash=content_hash, source=f"upload:{image_id}.jpg", collection=collection,
                  tenant=tenant, external_id=f"ext-{image_id}", tags=["a", "b"], created_at=1_700_000_000.5, **kwargs)


def vec(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def index(store: Store, image_id: str, vector: np.ndarray, model: str = MODEL, content_hash: str = "h1") -> None:
    update = vector_update(image_id, vector, content_hash=content_hash, model=model, thumb_key=f"thumbs/{image_id}",
                           width=64, height=48)
    assert store.set_image_vectors([update]) == [image_id]


def caption(store: Store, image_id: str, text: str, vector: np.ndarray, content_hash: str = "h1") -> None:
    update = caption_update(image_id, text, vector, content_hash=content_hash, caption_model="cap:v1", text_model=MODEL)
    assert store.set_captions([update]) == [image_id]


def ids(results: list[tuple[str, float]]) -> list[str]:
    return [i for i, _ in results]


# -- records ------------------------------------------------------------------------------------


def test_put_then_get(store: Store) -> None:
    store.put(rec("a"))
    got = store.get("a")
    assert got is not None
    assert (
        got.id,
        got.blob_key,
        got.content_hash,
        got.source,
        got.collection,
        got.tenant,
        got.external_id,
        got.tags,
    ) == ("a", "originals/a", "h1", "upload:a.jpg", "c1", "t1", "ext-a", ["a", "b"])
    assert (got.status, got.caption_status, got.error, got.caption, got.image_model) == (
        "queued",
        "pending",
        None,
        None,
        None,
    )
    assert got.created_at == pytest.approx(1_700_000_000.5, abs=1e-3)
    assert store.get("missing") is None
    store.put(rec("b"))
    assert sorted(store.get_many(["b", "missing", "a", "a"])) == ["a", "b"]
    assert store.get_many([]) == {}


def test_set_image_vectors_indexes_and_keeps_the_vector_and_model(store: Store) -> None:
    store.put(rec("a"))
    v = vec(1, 2, 3)
    index(store, "a", v)
    got = store.get("a")
    assert (got.status, got.image_model, got.thumb_key, got.width, got.height) == ("indexed", MODEL, "thumbs/a", 64, 48)
    stored, model = store.vector("a", "image")
    assert model == MODEL and stored.dtype == np.float32 and np.array_equal(stored, v)
    assert store.vector("a", "caption") is None
    assert store.vector("missing", "image") is None


def test_set_captions(store: Store) -> None:
    store.put(rec("a"))
    index(store, "a", vec(1))
    caption(store, "a", "a red bicycle", vec(0, 1))
    got = store.get("a")
    assert (got.caption, got.caption_status, got.caption_model, got.text_model) == (
        "a red bicycle",
        "done",
        "cap:v1",
        MODEL,
    )
    stored, model = store.vector("a", "caption")
    assert model == MODEL and np.array_equal(stored, vec(0, 1))


def test_updates_only_touch_the_version_that_was_processed(store: Store) -> None:
    store.put(rec("a", content_hash="new"))
    assert store.set_image_vectors([vector_update("a", vec(1), content_hash="old", model=MODEL)]) == []
    assert store.set_captions([caption_update("a", "stale", vec(1), content_hash="old", text_model=MODEL)]) == []
    store.set_failed("a", "old", "embed", "stale failure")
    got = store.get("a")
    assert (got.status, got.caption, got.error) == ("queued", None, None)
    assert store.vector("a", "image") is None


def test_deleted_records_are_never_resurrected(store: Store) -> None:
    store.put(rec("a"))
    removed = store.delete("a")
    assert removed is not None and removed.id == "a" and removed.blob_key == "originals/a"
    assert store.delete("a") is None
    assert store.set_image_vectors([vector_update("a", vec(1), content_hash="h1", model=MODEL)]) == []
    assert store.set_captions([caption_update("a", "x", vec(1), content_hash="h1", text_model=MODEL)]) == []
    store.set_failed("a", "h1", "embed", "late")
    assert store.get("a") is None
    assert store.knn("image", vec(1), 5, MODEL, Filters()) == []


def test_put_replaces_the_record_and_drops_its_vectors(store: Store) -> None:
    store.put(rec("a"))
    index(store, "a", vec(1))
    caption(store, "a", "a black cat", vec(0, 1))
    store.put(rec("a", content_hash="h2", collection="c2"))
    got = store.get("a")
    assert (got.status, got.caption, got.caption_status, got.content_hash, got.collection, got.image_model) == (
        "queued",
        None,
        "pending",
        "h2",
        "c2",
        None,
    )
    assert store.vector("a", "image") is None and store.vector("a", "caption") is None
    assert store.knn("image", vec(1), 5, MODEL, Filters()) == []
    assert store.keyword("cat", 5, Filters()) == []


def test_set_failed(store: Store) -> None:
    store.put(rec("a"))
    store.set_failed("a", "h1", "embed", "cannot decode")
    got = store.get("a")
    assert (got.status, got.error) == ("failed", "embed: cannot decode")
    store.put(rec("b"))
    index(store, "b", vec(1))
    store.set_failed("b", "h1", "caption", "captioner crashed")
    got = store.get("b")
    assert (got.status, got.caption_status, got.error) == ("indexed", "failed", "caption: captioner crashed")


def test_delete_returns_what_was_removed(store: Store) -> None:
    store.put(rec("a"))
    index(store, "a", vec(1))
    removed = store.delete("a")
    assert removed is not None and (removed.status, removed.thumb_key) == ("indexed", "thumbs/a")
    assert store.get("a") is None and store.vector("a", "image") is None


def test_counts(store: Store) -> None:
    for image_id in "abcd":
        store.put(rec(image_id))
    index(store, "a", vec(1))
    index(store, "b", vec(0, 1))
    caption(store, "b", "x", vec(1))
    store.set_failed("c", "h1", "embed", "bad")
    assert store.counts() == {"queued": 1, "indexed": 2, "failed": 1, "caption_pending": 1}


def test_stale_queued_lists_only_queued_records_older_than_the_cutoff(store: Store) -> None:
    import time

    before_any = time.time() - 1
    for image_id in "abcd":
        store.put(rec(image_id))
        time.sleep(0.01)  # distinct update times, so the order is defined
    index(store, "b", vec(1))
    store.set_failed("c", "h1", "embed", "bad")
    later = time.time() + 1
    assert store.stale_queued(later) == ["a", "d"]  # oldest first; indexed and failed ones never
    assert store.stale_queued(later, limit=1) == ["a"]
    assert store.stale_queued(before_any) == []


# -- search -------------------------------------------------------------------------------------


def test_knn_reports_cosine_similarity_best_first(store: Store) -> None:
    vectors = {"a": vec(1, 0), "b": vec(1, 1), "c": vec(0, 1), "d": vec(-1, 0.2)}
    for image_id, v in vectors.items():
        store.put(rec(image_id))
        index(store, image_id, v)
    query = vec(1, 0.1)
    got = store.knn("image", query, 3, MODEL, Filters())
    expected = sorted(((i, float(v @ query)) for i, v in vectors.items()), key=lambda p: -p[1])[:3]
    assert ids(got) == ids(expected)
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)
    everything = store.knn("image", query, 10, MODEL, Filters())
    assert everything[-1][0] == "d" and everything[-1][1] == pytest.approx(float(vectors["d"] @ query), abs=1e-4)
    assert everything[-1][1] < 0  # negative cosines come back negative


def test_knn_only_among_vectors_of_the_model(store: Store) -> None:
    store.put(rec("a"))
    store.put(rec("b"))
    index(store, "a", vec(1), MODEL)
    index(store, "b", vec(1), OTHER_MODEL)
    assert ids(store.knn("image", vec(1), 5, MODEL, Filters())) == ["a"]
    assert ids(store.knn("image", vec(1), 5, OTHER_MODEL, Filters())) == ["b"]
    assert store.knn("image", vec(1), 5, "clip:never-used", Filters()) == []


def test_knn_filters_and_min_score(store: Store) -> None:
    layout = {
        "a": ("t1", "c1", vec(1)),
        "b": ("t1", "c2", vec(1, 0.5)),
        "c": ("t2", "c1", vec(1, 0.2)),
        "d": ("t1", "c1", vec(0, 1)),
    }
    for image_id, (tenant, collection, v) in layout.items():
        store.put(rec(image_id, tenant=tenant, collection=collection))
        index(store, image_id, v)
    q = vec(1)
    t1_c1_not_a = Filters(tenant="t1", collection="c1", exclude_ids=frozenset({"a"}))
    assert sorted(ids(store.knn("image", q, 10, MODEL, Filters(tenant="t1")))) == ["a", "b", "d"]
    assert sorted(ids(store.knn("image", q, 10, MODEL, Filters(collection="c1")))) == ["a", "c", "d"]
    assert ids(store.knn("image", q, 10, MODEL, t1_c1_not_a)) == ["d"]
    assert store.knn("image", q, 10, MODEL, Filters(tenant="nobody")) == []
    assert sorted(ids(store.knn("image", q, 10, MODEL, Filters(), min_score=0.5))) == ["a", "b", "c"]
    # Filtering happens during the search: k results survive a filter that removes the best ones.
    assert ids(store.knn("image", q, 1, MODEL, t1_c1_not_a)) == ["d"]


def test_knn_and_keyword_exclude_several_ids_at_once(store: Store) -> None:
    layout = {"a": vec(1), "b": vec(1, 0.1), "c": vec(1, 0.3), "d": vec(1, 0.6)}
    for image_id, v in layout.items():
        store.put(rec(image_id))
        index(store, image_id, v)
        caption(store, image_id, f"a red bicycle number {image_id}", v)
    two = Filters(exclude_ids=frozenset({"a", "c"}))
    assert ids(store.knn("image", vec(1), 10, MODEL, two)) == ["b", "d"]
    assert ids(store.knn("caption", vec(1), 10, MODEL, two)) == ["b", "d"]
    # The excluded ones were the two best: k results still survive the exclusion.
    assert ids(store.knn("image", vec(1), 1, MODEL, Filters(exclude_ids=frozenset({"a", "b"})))) == ["c"]
    assert sorted(ids(store.keyword("red bicycle", 10, two))) == ["b", "d"]
    assert sorted(ids(store.keyword("red bicycle", 10, Filters()))) == ["a", "b", "c", "d"]
    # Ids the store never saw exclude nothing.
    assert sorted(ids(store.knn("image", vec(1), 10, MODEL, Filters(exclude_ids=frozenset({"zz", "a"}))))) == [
        "b", "c", "d"]


def test_vectors_returns_the_stored_vectors_of_the_model(store: Store) -> None:
    stored = {f"i{n}": vec(1, n, -n / 2, 0.1 * n) for n in range(6)}
    for image_id, v in stored.items():
        store.put(rec(image_id))
        index(store, image_id, v)
    for image_id in ("i1", "i2"):
        caption(store, image_id, f"caption of {image_id}", vec(0, 1, 0, float(image_id[1])))
    store.put(rec("other"))
    index(store, "other", vec(0, 0, 1), OTHER_MODEL)  # another model's vector
    store.put(rec("queued"))  # never embedded
    store.put(rec("failed"))
    index(store, "failed", vec(1, 1, 1))
    store.set_failed("failed", "h1", "embed", "later failure")  # not indexed any more
    store.delete("i5")
    asked = ["i0", "i1", "i3", "i5", "other", "queued", "failed", "missing", "i0"]
    got = store.vectors(asked, "image", MODEL)
    assert sorted(got) == ["i0", "i1", "i3"]
    for image_id, v in got.items():
        assert v.dtype == np.float32 and v.shape == (DIM,)
        np.testing.assert_allclose(v, stored[image_id], rtol=1e-6, atol=1e-7)
    assert sorted(store.vectors(iter(stored), "image", MODEL)) == ["i0", "i1", "i2", "i3", "i4"]
    assert list(store.vectors(["other", "i0"], "image", OTHER_MODEL)) == ["other"]
    np.testing.assert_allclose(store.vectors(["other"], "image", OTHER_MODEL)["other"], vec(0, 0, 1), atol=1e-7)
    captions = store.vectors(["i0", "i1", "i2"], "caption", MODEL)
    assert sorted(captions) == ["i1", "i2"]
    np.testing.assert_allclose(captions["i2"], vec(0, 1, 0, 2), atol=1e-7)
    assert store.vectors([], "image", MODEL) == {}
    assert store.vectors(["i0"], "image", "clip:never-used") == {}
    # A re-upload drops the vector until the new version is embedded.
    store.put(rec("i0", content_hash="h2"))
    assert sorted(store.vectors(["i0", "i1"], "image", MODEL)) == ["i1"]
    index(store, "i0", vec(0, 1), content_hash="h2")
    np.testing.assert_allclose(store.vectors(["i0"], "image", MODEL)["i0"], vec(0, 1), atol=1e-7)


def test_knn_excludes_records_that_are_not_indexed(store: Store) -> None:
    store.put(rec("queued"))
    store.put(rec("failed"))
    index(store, "failed", vec(1))
    store.set_failed("failed", "h1", "embed", "later failure")
    store.put(rec("ok"))
    index(store, "ok", vec(1, 0.1))
    assert ids(store.knn("image", vec(1), 5, MODEL, Filters())) == ["ok"]


def test_knn_on_caption_vectors(store: Store) -> None:
    store.put(rec("a"))
    store.put(rec("b"))
    index(store, "a", vec(1))
    index(store, "b", vec(1))
    caption(store, "a", "a dog", vec(0, 0, 1))
    got = store.knn("caption", vec(0, 0, 1), 5, MODEL, Filters())
    assert ids(got) == ["a"] and got[0][1] == pytest.approx(1.0, abs=1e-4)


def test_keyword_matches_captions(store: Store) -> None:
    captions = {
        "a": "a red bicycle leaning on a wall",
        "b": "a black cat sleeping on a sofa",
        "c": "two bicycles and a red car",
    }
    for image_id, text in captions.items():
        store.put(rec(image_id, collection="bikes" if image_id != "b" else "pets"))
        index(store, image_id, vec(1))
        caption(store, image_id, text, vec(1))
    assert ids(store.keyword("sleeping cat", 5, Filters()))[:1] == ["b"]
    assert sorted(ids(store.keyword("bicycle", 5, Filters()))) == ["a", "c"]  # stemmed: bicycles
    assert ids(store.keyword("red bicycle", 5, Filters(exclude_ids=frozenset({"a"})))) == ["c"]
    assert store.keyword("cat", 5, Filters(collection="bikes")) == []
    assert all(score > 0 for _, score in store.keyword("red", 5, Filters()))
    assert store.keyword("   ", 5, Filters()) == []
    assert store.keyword("zebra", 5, Filters()) == []
