"""The store contract: one behaviour, every backend.

Runs on the embedded store always, and on OpenSearch whenever ``OPENSEARCH_URL`` is set (e.g.
``http://127.0.0.1:9200``; optional ``OPENSEARCH_USERNAME``/``OPENSEARCH_PASSWORD``,
``OPENSEARCH_VERIFY_CERTS=false``, ``OPENSEARCH_AWS_REGION`` for SigV4, ``OPENSEARCH_ENGINE=lucene``):
the ``store`` fixture (tests/integration/conftest.py).
Each OpenSearch test works under its own random index prefix, with ``refresh=True`` so searches
see writes at once, and deletes its indices afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagesearch.attributes import AttributeSchema
from imagesearch.filtering import parse_where
from imagesearch.records import ImageRecord, Status
from imagesearch.stores.base import Filters, RecordPatch, Store
from tests.support.factories import caption_update, record, vector_update
from tests.support.stores import BACKENDS, open_test_store

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


# -- the filter language, titles, edits and listing (issue 15) ---------------------------------

SCHEMA = AttributeSchema.parse("brand:keyword,price:number,in_stock:boolean,released:date")
TAGS = ("red", "blue", "green", "sale", "new", "kids")
BRANDS = ("Acme", "Zeta", "Nova")
DAY_MS = 86_400_000


@pytest.fixture(params=BACKENDS)
def catalogue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The ``store`` fixture's backends, declaring :data:`SCHEMA`'s attributes."""
    yield from open_test_store(request.param, tmp_path, SCHEMA)


def seconds(ms: int) -> float:
    """Epoch seconds of a whole millisecond: what both stores keep exactly (OpenSearch stores ms)."""
    return ms / 1000


def random_catalogue(store: Store, n: int = 150, seed: int = 15) -> tuple[list[ImageRecord], dict[str, np.ndarray]]:
    """``n`` indexed records (seeded) with tags, created_at, taken_at (30% have none) and each
    attribute type (each absent from some), in two tenants; every title has the word "product"."""
    rng = np.random.default_rng(seed)
    records, vectors = [], {}
    for i in range(n):
        attributes: dict[str, str | float | bool] = {}
        if rng.random() < 0.8:
            attributes["brand"] = str(rng.choice(BRANDS))
        if rng.random() < 0.8:
            attributes["price"] = float(rng.integers(100, 10_000)) / 100
        if rng.random() < 0.7:
            attributes["in_stock"] = bool(rng.random() < 0.5)
        if rng.random() < 0.6:
            attributes["released"] = seconds(1_650_000_000_000 + int(rng.integers(0, 365 * DAY_MS)))
        image_id = f"p{i:03d}"
        records.append(record(
            image_id, content_hash="h1", tenant="t2" if i % 5 == 0 else "t1", collection="shop",
            tags=sorted(str(t) for t in rng.choice(TAGS, size=int(rng.integers(0, 4)), replace=False)),
            created_at=seconds(1_700_000_000_000 + int(rng.integers(0, 30 * DAY_MS))),
            taken_at=None if rng.random() < 0.3 else seconds(1_600_000_000_000 + int(rng.integers(0, 365 * DAY_MS))),
            title=f"product {image_id}", attributes=attributes))
        v = rng.normal(size=DIM).astype(np.float32)
        vectors[image_id] = v / np.linalg.norm(v)
    for r in records:
        store.put(r)
    updates = [vector_update(r.id, vectors[r.id], content_hash="h1", model=MODEL, taken_at=r.taken_at) for r in records]
    assert sorted(store.set_image_vectors(updates)) == sorted(r.id for r in records)
    for r in records:
        r.status = Status.INDEXED
    return records, vectors


FILTERS: list[dict[str, Any]] = [
    {},
    {"tags": {"any": ["red", "blue"]}},
    {"tags": {"all": ["sale", "new"]}},
    {"created_at": {"gte": seconds(1_700_000_000_000 + 10 * DAY_MS), "lt": "2023-12-04T00:00:00Z"}},
    {"taken_at": {"gt": seconds(1_600_000_000_000 + 100 * DAY_MS)}},
    {"attributes": {"brand": {"eq": "Acme"}, "in_stock": {"eq": True}}},
    {"attributes": {"price": {"range": {"gte": 20, "lt": 60.5}},
                    "released": {"range": {"lte": "2022-10-01T00:00:00Z"}}}},
    {"attributes": {"brand": {"exists": False}}},
    {"attributes": {"price": {"exists": True}, "brand": {"in": ["Zeta", "Nova"]}}, "tags": {"any": ["kids"]}},
    {"tags": {"all": ["red", "blue"]}, "attributes": {"in_stock": {"eq": False}}, "taken_at": {"lt": 1_620_000_000}},
    {"attributes": {"released": {"exists": True}}, "created_at": {"lte": seconds(1_700_000_000_000 + 3 * DAY_MS)}},
    {"attributes": {"brand": {"eq": "Nobody"}}},
]


def test_a_catalogue_reads_back_with_its_attributes_and_dates(catalogue: Store) -> None:
    records, _ = random_catalogue(catalogue, n=30)
    got = catalogue.get_many(r.id for r in records)
    for r in records:
        back = got[r.id]
        assert (back.tags, back.title, back.attributes, back.status) == (r.tags, r.title, r.attributes, "indexed")
        assert back.created_at == pytest.approx(r.created_at, abs=1e-6)
        assert back.taken_at == (None if r.taken_at is None else pytest.approx(r.taken_at, abs=1e-6))
        assert {k: type(v) for k, v in back.attributes.items()} == {k: type(v) for k, v in r.attributes.items()}


@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f, sort_keys=True) for f in FILTERS])
def test_filtered_knn_and_keyword_agree_with_brute_force(catalogue: Store, spec: dict[str, Any]) -> None:
    records, vectors = random_catalogue(catalogue)
    where = parse_where(spec, SCHEMA)
    filters = Filters(tenant="t1", where=where)
    matching = [r for r in records if r.tenant == "t1" and where.matches(r)]
    by_id = {r.id: r for r in records}
    rng = np.random.default_rng(7)
    for k in (5, 40):
        query = rng.normal(size=DIM).astype(np.float32)
        query /= np.linalg.norm(query)
        hits = catalogue.knn("image", query, k, MODEL, filters)
        # k hits whenever k records match: the filter runs inside the search, not after it.
        assert len(hits) == min(k, len(matching)), (len(hits), len(matching))
        assert len(set(ids(hits))) == len(hits)
        assert all(where.matches(by_id[i]) and by_id[i].tenant == "t1" for i in ids(hits))
        for image_id, score in hits:
            assert score == pytest.approx(float(vectors[image_id] @ query), abs=1e-4)
        # Brute force: no matching record left out scores better than the worst hit.
        if hits:
            left_out = [float(vectors[r.id] @ query) for r in matching if r.id not in set(ids(hits))]
            assert max(left_out, default=-1.0) <= hits[-1][1] + 1e-4
    found = catalogue.keyword("product", len(records), filters)
    assert sorted(ids(found)) == sorted(r.id for r in matching)


def titled(store: Store, titles: dict[str, str], field: str = "title") -> None:
    for image_id, text in titles.items():
        store.put(record(image_id, content_hash="h1", **{field: text}))
        index(store, image_id, vec(1))


def test_a_chinese_title_is_found_by_a_two_character_word_inside_it(catalogue: Store) -> None:
    titled(catalogue, {"dress": "女士红色连衣裙夏季新款", "jeans": "男士蓝色牛仔裤", "shoes": "儿童运动鞋 kids shoes"})
    assert ids(catalogue.keyword("连衣", 5, Filters())) == ["dress"]
    assert ids(catalogue.keyword("牛仔", 5, Filters())) == ["jeans"]
    assert ids(catalogue.keyword("连衣裙", 5, Filters())) == ["dress"]
    assert ids(catalogue.keyword("运动 shoes", 5, Filters())) == ["shoes"]
    assert ids(catalogue.keyword("红色", 5, Filters())) == ["dress"]
    # Characters of the title that are not next to each other in it are not a word of it.
    assert catalogue.keyword("衣连", 5, Filters()) == []
    assert catalogue.keyword("女裙", 5, Filters()) == []
    # Full-width input (a Chinese input method) means the same as ASCII.
    assert ids(catalogue.keyword("ｋｉｄｓ", 5, Filters())) == ["shoes"]


def test_english_stemming_works_in_titles_descriptions_and_captions(catalogue: Store) -> None:
    titled(catalogue, {"a": "She runs every morning", "c": "A sleeping cat"})
    titled(catalogue, {"b": "Morning run by the lake"}, field="description")
    catalogue.put(record("d", content_hash="h1"))
    index(catalogue, "d", vec(1))
    caption(catalogue, "d", "a dog running on a beach", vec(1))
    assert sorted(ids(catalogue.keyword("running", 5, Filters()))) == ["a", "b", "d"]
    assert ids(catalogue.keyword("cats", 5, Filters())) == ["c"]
    assert ids(catalogue.keyword("lake", 5, Filters())) == ["b"]


def test_patch_changes_metadata_and_leaves_vectors_and_status(catalogue: Store) -> None:
    catalogue.put(record("a", content_hash="h1", collection="c1", tenant="t1", tags=["old"], title="blue jeans",
                         description="denim", attributes={"brand": "Acme", "price": 10.0}, created_at=1_700_000_000.5))
    index(catalogue, "a", vec(1))
    caption(catalogue, "a", "a pair of trousers", vec(0, 1))
    catalogue.put(record("b", content_hash="h1", collection="c1", tenant="t1"))
    index(catalogue, "b", vec(1, 0.5))
    before = catalogue.get("a")

    got = catalogue.patch("a", RecordPatch(collection="c2", tags=["new", "sale"], title="女士红色连衣裙",
                                           attributes={"brand": "Zeta"}, clear=frozenset({"description"})))
    assert got is not None
    assert (got.collection, got.tags, got.title, got.description, got.attributes) == (
        "c2", ["new", "sale"], "女士红色连衣裙", None, {"brand": "Zeta"})
    assert got == catalogue.get("a")
    unchanged = ("id", "tenant", "status", "content_hash", "blob_key", "caption", "caption_status", "image_model",
                 "text_model", "thumb_key", "width", "height", "external_id")
    assert {f: getattr(got, f) for f in unchanged} == {f: getattr(before, f) for f in unchanged}
    assert got.created_at == pytest.approx(before.created_at, abs=1e-6)
    stored, model = catalogue.vector("a", "image")
    assert model == MODEL and np.array_equal(stored, vec(1))
    # What search sees moved with it: the collection, the tags, the attributes, the text.
    assert ids(catalogue.knn("image", vec(1), 5, MODEL, Filters(collection="c2"))) == ["a"]
    assert ids(catalogue.knn("image", vec(1), 5, MODEL, Filters(collection="c1"))) == ["b"]
    assert ids(catalogue.knn("caption", vec(0, 1), 5, MODEL, Filters(collection="c2"))) == ["a"]
    assert ids(catalogue.knn("image", vec(1), 5, MODEL, Filters(where=parse_where(
        {"tags": {"all": ["sale"]}, "attributes": {"brand": {"eq": "Zeta"}, "price": {"exists": False}}},
        SCHEMA)))) == ["a"]
    old_tag = Filters(where=parse_where({"tags": {"any": ["old"]}}, SCHEMA))
    assert catalogue.knn("image", vec(1), 5, MODEL, old_tag) == []
    assert ids(catalogue.keyword("连衣", 5, Filters())) == ["a"]
    assert catalogue.keyword("jeans", 5, Filters()) == [] and catalogue.keyword("denim", 5, Filters()) == []
    assert ids(catalogue.keyword("trousers", 5, Filters(collection="c2"))) == ["a"]  # the caption stays
    # Fields a patch does not name stay as they are.
    again = catalogue.patch("a", RecordPatch(tags=["only"]))
    assert again is not None and (again.collection, again.title, again.tags) == ("c2", "女士红色连衣裙", ["only"])


def test_patch_of_a_deleted_record_returns_none_and_does_not_recreate_it(catalogue: Store) -> None:
    catalogue.put(record("a", content_hash="h1"))
    catalogue.delete("a")
    assert catalogue.patch("a", RecordPatch(title="back?", tags=["x"])) is None
    assert catalogue.patch("never", RecordPatch(collection="c9")) is None
    assert catalogue.get("a") is None and catalogue.get("never") is None
    assert catalogue.list_records(Filters(), None, None, 10).records == []


def listing_catalogue(store: Store) -> list[ImageRecord]:
    """30 records over two tenants, several sharing a created_at (the id breaks the tie), in
    every status."""
    records = []
    for n in range(30):
        created_ms = 1_700_000_000_000 + (n % 7) * 1000 + n % 2
        r = record(f"r{(n * 37) % 100:02d}", content_hash="h1", tenant="t1" if n % 4 else "t2",
                   tags=["even"] if n % 2 == 0 else ["odd"], created_at=seconds(created_ms))
        store.put(r)
        records.append(r)
    for r in records[::3]:
        index(store, r.id, vec(1))
        r.status = Status.INDEXED
    for r in records[1::7]:
        store.set_failed(r.id, "h1", "embed", "broken")
        r.status = Status.FAILED
    return records


def all_pages(store: Store, filters: Filters, status: str | None, limit: int) -> list[list[ImageRecord]]:
    pages, after = [], None
    for _ in range(100):
        page = store.list_records(filters, status, after, limit)
        assert len(page.records) <= limit
        pages.append(page.records)
        if page.after is None:
            return pages
        assert page.after == (page.records[-1].created_at, page.records[-1].id)
        after = page.after
    raise AssertionError("the cursor never ran out")


@pytest.mark.parametrize("limit", [1, 4, 7, 100])
def test_list_records_pages_through_every_record_by_created_at_then_id(catalogue: Store, limit: int) -> None:
    records = listing_catalogue(catalogue)
    expected = [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id))]
    pages = all_pages(catalogue, Filters(), None, limit)
    listed = [r.id for page in pages for r in page]
    assert listed == expected  # concatenated pages: everything, in order, no duplicates
    assert all(pages[:-1])  # only the last page may be empty
    assert len(pages) <= len(expected) // limit + 1
    first = catalogue.list_records(Filters(), None, None, limit).records[0]
    assert (first.id, first.status, first.tags) == (expected[0], next(r.status for r in records if r.id == expected[0]),
                                                    next(r.tags for r in records if r.id == expected[0]))


@pytest.mark.parametrize(("tenant", "status", "spec"), [
    ("t1", None, {}),
    (None, "indexed", {}),
    (None, "queued", {"tags": {"any": ["even"]}}),
    ("t1", "failed", {}),
    (None, None, {"created_at": {"gte": 1_700_000_002.0, "lt": 1_700_000_005.001}, "tags": {"all": ["odd"]}}),
    ("t2", "indexed", {"tags": {"any": ["nothing"]}}),
])
def test_list_records_applies_filters_and_status(catalogue: Store, tenant: str | None, status: str | None,
                                                 spec: dict[str, Any]) -> None:
    records = listing_catalogue(catalogue)
    where = parse_where(spec, SCHEMA)
    expected = [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id))
                if (tenant is None or r.tenant == tenant) and (status is None or r.status == status)
                and where.matches(r)]
    pages = all_pages(catalogue, Filters(tenant=tenant, where=where), status, 3)
    assert [r.id for page in pages for r in page] == expected
