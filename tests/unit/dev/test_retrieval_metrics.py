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


def test_query_languages_from_the_field_or_the_characters(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes(b"x")
    rows = [{"query": "red circle", "relevant": ["a"]}, {"query": "红色圆形", "relevant": ["a"]},
            {"query": "cercle rouge", "relevant": ["b"], "language": "fr"}]
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows),
                                            encoding="utf-8")
    assert [q.language for q in ev.load_labelled_set(tmp_path).queries] == ["en", "zh", "fr"]
    (tmp_path / "queries.jsonl").unlink()
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"image": "a.jpg", "caption": "蓝色"}, ensure_ascii=False) + "\n"
        + json.dumps({"image": "b.jpg", "caption": "blue", "language": "zh"}), encoding="utf-8")
    assert [q.language for q in ev.load_labelled_set(tmp_path).queries] == ["zh", "zh"]


def test_score_per_language(tmp_path):
    queries = [ev.LabelledQuery("a one", frozenset({"a"}), "en"), ev.LabelledQuery("b one", frozenset({"b"}), "en"),
               ev.LabelledQuery("一", frozenset({"a"}), "zh")]
    labelled = ev.LabelledSet({"a": tmp_path, "b": tmp_path, "c": tmp_path}, queries)
    # image mode: both English queries right at 1, the Chinese one only at 2; latencies differ by language.
    rankings = {"image": [["a", "b"], ["b", "a"], ["c", "a"]], "caption": [["c", "a"], ["b", "c"], ["a", "c"]]}
    latencies = {"image": [1.0, 2.0, 30.0], "caption": [1.0, 1.0, 1.0]}
    report = ev.score(rankings, latencies, labelled, failed=0, models={})
    languages = {lang.language: lang for lang in report.by_language}
    assert sorted(languages) == ["en", "zh"] and (languages["en"].queries, languages["zh"].queries) == (2, 1)
    en = {m.mode: m for m in languages["en"].modes}
    zh = {m.mode: m for m in languages["zh"].modes}
    overall = {m.mode: m for m in report.modes}
    assert en["image"].recall[1] == 1.0 and zh["image"].recall[1] == 0.0 and zh["image"].recall[5] == 1.0
    assert overall["image"].recall[1] == pytest.approx(2 / 3)
    assert en["caption"].recall[1] == 0.5 and zh["caption"].recall[1] == 1.0 and zh["caption"].mrr == 1.0
    assert zh["image"].latency_p50_ms == 30.0 and en["image"].latency_p95_ms == 2.0
    assert languages["zh"].chance_recall[1] == pytest.approx(1 / 3)
    table = ev.render_table(report)
    assert "en 2, zh 1" in table
    assert [line.split()[:2] for line in table.splitlines() if line.startswith("image")] == \
           [["image", "all"], ["image", "en"], ["image", "zh"]]
    payload = json.loads(json.dumps(report.to_json()))
    assert [lang["language"] for lang in payload["by_language"]] == ["en", "zh"]
    ev.write_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
