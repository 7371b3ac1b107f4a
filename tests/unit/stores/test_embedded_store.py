"""The embedded store across processes: concurrent writers, readers that see every commit."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np

from imagesearch.stores.base import Filters
from imagesearch.stores.embedded import EmbeddedStore
from imagesearch.stores.vector_table import VectorTable
from tests.support.factories import caption_update, record, vector_update

DIM = 8


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _writer(path: str, start: int, count: int) -> None:
    store = EmbeddedStore(Path(path))
    for i in range(start, start + count):
        store.put(record(f"img-{i}", content_hash=f"h{i}"))
        store.set_image_vectors([vector_update(f"img-{i}", _unit(i), content_hash=f"h{i}", model="m1")])
    store.close()


def test_concurrent_writer_processes_and_a_live_reader(tmp_path):
    path = tmp_path / "store.sqlite3"
    reader = EmbeddedStore(path)
    assert reader.knn("image", _unit(0), 5, "m1", Filters()) == []
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(path), n * 100, 60)) for n in range(3)]
    for w in writers:
        w.start()
    seen_during = len(reader.knn("image", _unit(0), 1000, "m1", Filters()))
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    hits = reader.knn("image", _unit(0), 1000, "m1", Filters())
    assert len(hits) == 180 >= seen_during  # every committed vector, none twice
    assert hits[0][0] == "img-0" and abs(hits[0][1] - 1.0) < 1e-5
    assert reader.counts()["indexed"] == 180


def test_exact_knn_matches_brute_force_with_filters(tmp_path):
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    vectors = {}
    for i in range(50):
        store.put(record(f"i{i}", collection="a" if i % 2 else "b", tenant="t1" if i < 40 else "t2"))
        vectors[f"i{i}"] = _unit(i)
    store.set_image_vectors([vector_update(i, v, model="m1") for i, v in vectors.items()])
    q = _unit(999)
    hits = store.knn("image", q, 5, "m1", Filters(tenant="t1", collection="a"))
    expected = sorted(
        ((i, float(v @ q)) for i, v in vectors.items() if int(i[1:]) % 2 and int(i[1:]) < 40), key=lambda x: -x[1]
    )[:5]
    assert [h[0] for h in hits] == [e[0] for e in expected]
    np.testing.assert_allclose([h[1] for h in hits], [e[1] for e in expected], rtol=1e-5)
    # Another model's vectors are never mixed in; min_score cuts; exclude drops the query image.
    assert store.knn("image", q, 5, "m2", Filters()) == []
    assert all(s >= 0.5 for _, s in store.knn("image", q, 50, "m1", Filters(), min_score=0.5))
    excluded = {i for i, _ in store.knn("image", vectors["i0"], 50, "m1", Filters(exclude_ids=frozenset({"i0", "i2"})))}
    assert excluded == set(vectors) - {"i0", "i2"}


def test_updates_never_resurrect_or_overwrite_a_newer_version(tmp_path):
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.put(record("x", content_hash="old"))
    store.put(record("x", content_hash="new"))  # re-uploaded while a task ran
    assert store.set_image_vectors([vector_update("x", _unit(1), content_hash="old", model="m1")]) == []
    assert store.get("x").status == "queued"
    store.delete("x")
    assert store.set_image_vectors([vector_update("x", _unit(1), content_hash="new", model="m1")]) == []
    assert store.get("x") is None and store.knn("image", _unit(1), 5, "m1", Filters()) == []


def test_captions_keyword_search_and_delete(tmp_path):
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    for i, caption in enumerate(["two red circles left of a blue square", "one green star", "three green stars"]):
        store.put(record(f"c{i}"))
        store.set_image_vectors([vector_update(f"c{i}", _unit(i), model="m1")])
        store.set_captions([caption_update(f"c{i}", caption, _unit(10 + i), text_model="m1")])
    assert [i for i, _ in store.keyword("green star", 10, Filters())][:2] in (["c1", "c2"], ["c2", "c1"])
    assert store.keyword('" OR *', 10, Filters()) == []  # FTS syntax in user text is inert
    assert store.knn("caption", _unit(11), 1, "m1", Filters())[0][0] == "c1"
    store.delete("c1")
    assert "c1" not in {i for i, _ in store.keyword("green star", 10, Filters())}
    assert "c1" not in {i for i, _ in store.knn("caption", _unit(11), 3, "m1", Filters())}


def test_vector_table_compacts_and_keeps_answers():
    table = VectorTable(DIM)
    for i in range(3000):
        table.add(f"v{i}", _unit(i), "t", "c")
    for i in range(0, 3000, 3):
        table.remove(f"v{i}")
    for i in range(1, 3000, 3):
        table.remove(f"v{i}")
    assert len(table) == 1000
    hits = table.search(_unit(2), 1, Filters(), None)
    assert hits[0][0] == "v2" and abs(hits[0][1] - 1.0) < 1e-5


def test_vector_table_matches_brute_force_through_adds_removes_and_growth(monkeypatch):
    """Buffered appends, growth and compaction never change an answer (checked after every step)."""
    import imagesearch.stores.vector_table as vector_table

    # Small blocks, so growth, block boundaries and staged writes spanning blocks all occur.
    monkeypatch.setattr(vector_table, "_PENDING_BLOCK", 7)
    monkeypatch.setattr(vector_table, "_BLOCK", 16)
    monkeypatch.setattr(vector_table, "_FIRST_BLOCK", 2)
    compactions = []
    compact = VectorTable._compact
    monkeypatch.setattr(VectorTable, "_compact", lambda self: (compactions.append(1), compact(self)))
    rng = np.random.default_rng(5)
    table = VectorTable(DIM)
    live: dict[str, np.ndarray] = {}
    for step in range(3000):
        image_id = f"v{rng.integers(400)}"
        if rng.random() < 0.3:
            table.remove(image_id)
            live.pop(image_id, None)
        else:  # a new id, or a re-added one replacing its old vector
            vector = rng.standard_normal(DIM).astype(np.float32)
            vector /= np.linalg.norm(vector)
            table.add(image_id, vector, "t", "c")
            live[image_id] = vector
        if step % 50 == 0 or step == 2999:
            query = rng.standard_normal(DIM).astype(np.float32)
            hits = table.search(query, 5, Filters(), None)
            expected = sorted(live, key=lambda i: -float(live[i] @ query))[:5]
            assert [h[0] for h in hits] == expected
            np.testing.assert_allclose([h[1] for h in hits], [live[i] @ query for i in expected], rtol=1e-5)
            # get() gathers the same columns, staged or written, in any order asked.
            asked = [f"v{i}" for i in rng.permutation(400)[:60]]
            got = table.get(asked)
            assert list(got) == [i for i in asked if i in live]
            for image_id, vector in got.items():
                assert np.array_equal(vector, live[image_id])
    assert len(table) == len(live) and len(compactions) >= 2


def test_a_store_file_from_before_attributes_is_upgraded_on_open(tmp_path):
    """Files written before titles, attributes and CJK-aware text search get the columns and a
    rebuilt text index when a newer version opens them; nothing already stored is lost."""
    import sqlite3

    from tests.support.paths import ROOT

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript((ROOT / "tests" / "data" / "embedded_schema_v1.sql").read_text())
    db.execute("INSERT INTO images (id, tenant, collection, status, source, blob_key, content_hash, tags, "
               "caption, caption_status, created_at, updated_at, seq) VALUES ('old', 'default', 'default', "
               "'indexed', 'upload', 'originals/old', 'h', '[\"x\"]', 'two dogs running', 'done', 1.0, 1.0, 1)")
    db.execute("INSERT INTO captions_fts(id, caption) VALUES ('old', 'two dogs running')")
    db.commit()
    db.close()
    store = EmbeddedStore(path)
    record = store.get("old")
    assert record is not None and record.tags == ["x"] and record.attributes == {} and record.title is None
    assert [i for i, _ in store.keyword("dog runs", 5, Filters())] == ["old"]
    again = EmbeddedStore(path)  # a second open finds the schema current and writes nothing
    assert again.get("old") == record
