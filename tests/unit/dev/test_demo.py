"""The demo's queries, marks and recall: drawn from what it indexes, judged by structure."""

from __future__ import annotations

import pytest

from imagesearch.dev import demo, world


@pytest.fixture(scope="module")
def samples() -> list[world.Sample]:
    return world.generate(60, seed=demo.DEMO_SEED)


def test_default_queries_have_right_answers_and_include_chinese(samples):
    queries = demo.default_queries(samples)
    assert len(queries) == len(set(queries)) >= 4
    assert {world.query_language(q) for q in queries} == {"en", "zh"}
    for query in queries:
        relevant = demo.relevant_ids(query, samples)
        assert relevant, query
    # Not one fixed list: other images give other queries.
    assert demo.default_queries(world.generate(60, seed=5)) != queries


def test_default_queries_cope_with_few_images():
    for n in (1, 2, 3):
        samples = world.generate(n, seed=demo.DEMO_SEED)
        queries = demo.default_queries(samples)
        assert queries and all(demo.relevant_ids(q, samples) for q in queries)


def test_marks_follow_the_structure_not_the_english_text(samples):
    target = next(s for s in samples if len(s.groups) == 1)
    group = target.groups[0]
    chinese = group.phrase_zh(with_size=False)
    relevant = demo.relevant_ids(chinese, samples)
    assert target.id in relevant
    assert relevant == demo.relevant_ids(group.phrase(with_size=False), samples)
    assert demo.mark(target.id, relevant) == "✓"
    other = next(s for s in samples if s.id not in relevant)
    assert demo.mark(other.id, relevant) == "✗"
    assert demo.relevant_ids("a photo of a dog", samples) is None
    assert demo.mark(target.id, None) == "?"


def test_a_query_nothing_fits_gets_fitting_images_from_further_along(samples):
    absent = next(text for text in ("one red circle", "两颗蓝色星星", "三个绿色三角形", "four purple stars")
                  if not demo.relevant_ids(text, samples))
    extras = demo.extra_samples([absent, "zebra", samples[0].caption], samples)
    assert 1 <= len(extras) <= demo.EXTRA_PER_QUERY
    description = world.describe(absent)
    assert all(world.matches(description, s) for s in extras)
    assert all(int(s.id.rsplit("-", 1)[1]) >= len(samples) for s in extras)
    assert demo.extra_samples([samples[0].caption], samples) == []


def test_tally_counts_recall_at_one_and_at_the_shown_depth():
    tally = demo.Tally()
    tally.add(["a", "b", "c"], {"a"})
    tally.add(["x", "y", "b"], {"b"})
    tally.add(["x", "y", "z", "b"], {"b"})  # beyond the shown hits
    assert (tally.queries, tally.at_1, tally.at_shown) == (3, 1, 2)
    assert "R@1 1/3" in tally.line("image") and f"R@{demo.SHOWN} 2/3" in tally.line("image")
    assert "no query" in demo.Tally().line("image")
