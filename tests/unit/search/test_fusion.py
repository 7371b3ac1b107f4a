"""Hybrid fusion: both methods, their weights and what a hit missing from a list gets."""

from __future__ import annotations

import pytest

from imagesearch.fusion import FusionConfig, fuse
from imagesearch.vocab import FusionMethod, RankedList

IMAGE, CAPTION, KEYWORD = RankedList.IMAGE, RankedList.CAPTION, RankedList.KEYWORD
LISTS = {
    IMAGE: [("a", 0.9), ("b", 0.5), ("c", -0.2)],
    CAPTION: [("b", 0.8), ("c", 0.7)],
    KEYWORD: [("c", 12.0), ("a", 4.0), ("d", 2.0)],
}


def test_linear_fuses_clipped_cosines_and_min_max_bm25():
    config = FusionConfig(FusionMethod.LINEAR, {IMAGE: 0.5, CAPTION: 0.35, KEYWORD: 0.15})
    fused = {f.id: f.score for f in fuse(LISTS, config)}
    assert fused["a"] == pytest.approx(0.5 * 0.9 + 0.15 * (4 - 2) / 10)
    assert fused["b"] == pytest.approx(0.5 * 0.5 + 0.35 * 0.8)
    # A negative cosine counts as zero, the best BM25 as one.
    assert fused["c"] == pytest.approx(0.5 * 0.0 + 0.35 * 0.7 + 0.15 * 1.0)
    assert fused["d"] == pytest.approx(0.0)
    assert [f.id for f in fuse(LISTS, config)] == ["b", "a", "c", "d"]


def test_weighted_rrf_uses_ranks_only():
    config = FusionConfig(FusionMethod.RRF, {IMAGE: 1.0, CAPTION: 0.0, KEYWORD: 0.5}, rrf_k=10)
    fused = {f.id: f.score for f in fuse(LISTS, config)}
    assert fused["a"] == pytest.approx(1 / 11 + 0.5 / 12)
    assert fused["c"] == pytest.approx(1 / 13 + 0.5 / 11)
    assert fused["b"] == pytest.approx(1 / 12)  # its caption rank 1 weighs nothing


def test_parts_say_where_each_hit_stands():
    fused = {f.id: f for f in fuse(LISTS, FusionConfig())}
    assert fused["c"].parts[KEYWORD].rank == 1 and fused["c"].parts[KEYWORD].score == 12.0
    assert set(fused["d"].parts) == {KEYWORD}


def test_a_zero_weight_list_changes_nothing_and_is_not_searched():
    config = FusionConfig(FusionMethod.LINEAR, {IMAGE: 1.0, CAPTION: 0.0, KEYWORD: 0.0})
    assert config.active() == [IMAGE]
    order = [f.id for f in fuse(LISTS, config) if f.score > 0]
    assert order == [i for i, s in LISTS[IMAGE] if s > 0]


def test_equal_bm25_scores_normalise_to_one_and_ties_order_by_id():
    fused = fuse({KEYWORD: [("y", 3.0), ("x", 3.0)]}, FusionConfig(FusionMethod.LINEAR, {KEYWORD: 1.0}))
    assert [(f.id, f.score) for f in fused] == [("x", 1.0), ("y", 1.0)]


def test_config_round_trips_through_json():
    config = FusionConfig(FusionMethod.RRF, {IMAGE: 0.2, CAPTION: 0.7, KEYWORD: 0.1}, depth=150, rrf_k=30)
    assert FusionConfig.from_json(config.to_json()) == config
