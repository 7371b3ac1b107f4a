"""``eval --tune``'s fusion search: its vectorised re-ranking agrees with the service's fusion, it
keeps the defaults when nothing beats them beyond noise, and it drops a list that is noise."""

from __future__ import annotations

import random

import numpy as np
import pytest

from imagesearch.dev import tuning
from imagesearch.fusion import FusionConfig
from imagesearch.vocab import FusionMethod, RankedList

IMAGE, CAPTION, KEYWORD = RankedList.IMAGE, RankedList.CAPTION, RankedList.KEYWORD


def _ranked(rng: random.Random, ids: list[str], right: str, hit_rate: float, noise: bool) -> list[tuple[str, float]]:
    scores = {i: rng.uniform(0.1, 0.6) for i in ids}
    if not noise and rng.random() < hit_rate:
        scores[right] = 0.7
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _queries(n: int, caption_is_noise: bool, seed: int = 0) -> tuple[list[tuning.QueryLists], list[frozenset[str]]]:
    """Each query's right answer is ``q<i>``; the image list ranks it first 80 % of the time, the
    caption list (unless noise) 90 %, among 30 distractors with scores from the same range."""
    rng = random.Random(seed)
    data, relevant = [], []
    for q in range(n):
        right = f"q{q}"
        ids = [right] + [f"d{q}-{j}" for j in range(30)]
        keyword = [(i, rng.uniform(1, 9)) for i in rng.sample(ids, 5)]
        data.append(tuning.QueryLists({IMAGE: _ranked(rng, ids, right, 0.8, False),
                                       CAPTION: _ranked(rng, ids, right, 0.9, caption_is_noise),
                                       KEYWORD: sorted(keyword, key=lambda kv: -kv[1])}))
        relevant.append(frozenset({right}))
    return data, relevant


def test_vectorised_ranks_agree_with_the_services_fusion():
    data, relevant = _queries(40, caption_is_noise=False)
    configs = [FusionConfig(FusionMethod.LINEAR, {IMAGE: 0.3, CAPTION: 0.5, KEYWORD: 0.2}),
               FusionConfig(FusionMethod.RRF, {IMAGE: 0.6, CAPTION: 0.0, KEYWORD: 0.4}, rrf_k=10)]
    for query, rel in zip(data, relevant):
        fast = tuning._first_relevant_ranks(query, rel, configs)
        for config, rank in zip(configs, fast):
            order = [i for i, _ in tuning.ranked(query, config)]
            exact = order.index(next(iter(rel))) + 1
            assert rank == (exact if exact <= 10 else np.inf)


def test_a_list_of_noise_gets_no_weight():
    data, relevant = _queries(300, caption_is_noise=True)
    train, _ = tuning.split(len(data), seed=0)
    result = tuning.tune_fusion(data, relevant, train, FusionConfig())
    # Chance lets a little weight through on 150 queries; most of it goes to the image list.
    assert not result.kept_default and result.fusion.weight(CAPTION) <= 0.2 <= 0.7 <= result.fusion.weight(IMAGE)
    assert result.train_mrr > result.default_train_mrr + 0.05


def test_two_good_lists_keep_weight_on_both():
    data, relevant = _queries(300, caption_is_noise=False)
    train, _ = tuning.split(len(data), seed=0)
    result = tuning.tune_fusion(data, relevant, train, FusionConfig(weights={IMAGE: 1.0}))
    assert result.fusion.weight(IMAGE) > 0 and result.fusion.weight(CAPTION) > 0


def test_defaults_stay_when_nothing_beats_them_beyond_noise():
    data, relevant = _queries(300, caption_is_noise=False)
    train, _ = tuning.split(len(data), seed=0)
    best = tuning.tune_fusion(data, relevant, train, FusionConfig())
    # Start from the fusion the search found: no other beats it by more than chance on these queries.
    again = tuning.tune_fusion(data, relevant, train, best.fusion)
    assert again.kept_default and again.fusion == best.fusion


def test_split_is_seeded_disjoint_and_complete():
    train, held = tuning.split(11, seed=3)
    assert sorted(train + held) == list(range(11)) and len(train) == 5
    assert tuning.split(11, seed=3) == (train, held) != tuning.split(11, seed=4)


def test_the_grid_covers_the_simplex():
    grid = tuning.weight_grid()
    assert len(grid) == 66 and all(sum(w.values()) == pytest.approx(1.0) for w in grid)
    assert len(tuning.candidates(100)) == 66 * (1 + len(tuning.RRF_CONSTANTS))
