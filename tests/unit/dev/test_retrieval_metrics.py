"""Retrieval metrics and chance levels used by `imagesearch eval`."""

from __future__ import annotations

import json
import math
import random

import pytest

from imagesearch.dev import evaluate as ev


def test_metrics_on_a_known_ranking():
    relevant = frozenset({"b", "d"})
    ranked = ["a", "b", "c", "d"]
    assert ev.recall_at(ranked, relevant, 1) == 0.0
    assert ev.recall_at(ranked, relevant, 2) == 1.0
    assert ev.reciprocal_rank(ranked, relevant) == 0.5
    ideal = 1 + 1 / math.log2(3)
    assert ev.ndcg_at(ranked, relevant) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert ev.ndcg_at(["b", "d"], relevant) == pytest.approx(1.0)
    assert ev.reciprocal_rank(["x"], relevant) == 0.0


def test_chance_matches_simulation():
    rng = random.Random(0)
    n, r, k = 30, 3, 5
    items = list(range(n))
    hits = 0
    for _ in range(20000):
        rng.shuffle(items)
        hits += any(i < r for i in items[:k])
    assert ev.chance_recall_at(n, r, k) == pytest.approx(hits / 20000, abs=0.015)
    assert ev.chance_recall_at(10, 1, 1) == pytest.approx(0.1)
    assert ev.chance_recall_at(5, 1, 10) == 1.0


def test_labelled_sets_from_queries_or_captions(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes(b"x")
    (tmp_path / "captions.jsonl").write_text(
        "\n".join(json.dumps({"image": f"{n}.jpg", "caption": f"photo {n}"}) for n in ("a", "b")))
    labelled = ev.load_labelled_set(tmp_path)
    assert [(q.text, set(q.relevant)) for q in labelled.queries] == [("photo a", {"a"}), ("photo b", {"b"})]
    (tmp_path / "queries.jsonl").write_text(json.dumps({"query": "both", "relevant": ["a", "b"]}))
    assert ev.load_labelled_set(tmp_path).queries[0].relevant == {"a", "b"}
    (tmp_path / "queries.jsonl").write_text(json.dumps({"query": "ghost", "relevant": ["zzz"]}))
    with pytest.raises(ValueError, match="without an image"):
        ev.load_labelled_set(tmp_path)


def test_score_and_outputs(tmp_path):
    labelled = ev.LabelledSet({"a": tmp_path, "b": tmp_path}, [ev.LabelledQuery("q", frozenset({"a"}))])
    report = ev.score({"image": [["a", "b"]], "caption": [["b", "a"]]}, {"image": [3.0], "caption": [5.0]},
                      labelled, failed=0, models={})
    by_mode = {m.mode: m for m in report.modes}
    assert by_mode["image"].recall[1] == 1.0 and by_mode["caption"].recall[1] == 0.0
    assert by_mode["caption"].mrr == 0.5 and report.chance_recall[1] == 0.5
    assert "chance" in ev.render_table(report)
    ev.write_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
