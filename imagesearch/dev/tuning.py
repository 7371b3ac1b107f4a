"""``imagesearch eval --tune``: fit hybrid fusion and relevance calibration on a labelled set.

The queries are split at random (seeded) into a tuning half and a held-out half. On the tuning
half:

- every fusion in a grid (both methods; weights on a 0.1 simplex over the three lists; several
  RRF constants) re-ranks each query's lists, which were fetched once through the API (image and
  caption kNN to the fusion depth, and the keyword list from hybrid's ``explain``), and the one
  whose MRR gain over the defaults is largest at its lower 95 % confidence bound wins, and the
  defaults stay when no bound is above zero;
- a logistic regression per mode maps a top-10 hit's place in its list (score, gap to the best,
  1/rank: ``imagesearch.relevance``) to P(relevant).

The held-out half then says what the tuning is worth: the report's ``held_out`` rows are measured
through the API, after the profile was saved and the API re-read it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from imagesearch.fusion import FusionConfig, contributions, fuse, keyword_bounds
from imagesearch.relevance import Calibration, features
from imagesearch.vocab import FusionMethod, RankedList

CALIBRATION_TOP = 10  # hits per query whose scores the calibration is fitted on (what users see)
CALIBRATION_C = 10.0  # inverse L2 strength: three features and thousands of hits need little of it
RRF_CONSTANTS = (10, 30, 60, 100)
STEP = 0.1


@dataclass(frozen=True)
class QueryLists:
    """One query's lists, by image id, best first."""

    lists: Mapping[RankedList, Sequence[tuple[str, float]]]


def split(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Query indices for tuning and held out, half each, shuffled with ``seed``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    half = n // 2
    return sorted(order[:half]), sorted(order[half:])


def weight_grid(step: float = STEP) -> list[dict[RankedList, float]]:
    """Every weighting of the three lists on the simplex, ``step`` apart."""
    units = round(1 / step)
    grid = []
    for image, caption in product(range(units + 1), repeat=2):
        keyword = units - image - caption
        if keyword >= 0:
            grid.append({RankedList.IMAGE: image / units, RankedList.CAPTION: caption / units,
                         RankedList.KEYWORD: keyword / units})
    return grid


def candidates(depth: int) -> list[FusionConfig]:
    weights = weight_grid()
    configs = [FusionConfig(FusionMethod.LINEAR, w, depth) for w in weights]
    configs += [FusionConfig(FusionMethod.RRF, w, depth, rrf_k) for rrf_k in RRF_CONSTANTS for w in weights]
    return configs


def ranked(query: QueryLists, config: FusionConfig) -> list[tuple[str, float]]:
    """The query's ids under ``config``: the service's own fusion function."""
    return [(f.id, f.score) for f in fuse(query.lists, config)]


def _first_relevant_ranks(query: QueryLists, relevant: frozenset[str], configs: Sequence[FusionConfig]) -> np.ndarray:
    """Rank (1-based, inf when outside the top 10) of the first relevant id under each config,
    vectorised over configs that share a method and RRF constant (tie order can differ from
    :func:`fuse` only between exactly equal scores)."""
    ids = sorted({i for ranked_list in query.lists.values() for i, _ in ranked_list})
    if not ids or not relevant & set(ids):
        return np.full(len(configs), np.inf)
    position = {i: n for n, i in enumerate(ids)}
    names = list(RankedList)
    bounds = keyword_bounds(query.lists)
    present = {name: ([position[i] for i, _ in ranked], [s for _, s in ranked], np.arange(1, len(ranked) + 1))
               for name, ranked in query.lists.items() if ranked}
    # Contributions depend on the method and RRF constant, not the weights: once per pair, not per config.
    matrices: dict[tuple[FusionMethod, int], np.ndarray] = {}

    def contribution_matrix(config: FusionConfig) -> np.ndarray:
        key = (config.method, config.rrf_k)
        if key not in matrices:
            matrix = np.zeros((len(ids), len(names)))  # a hit absent from a list gets 0 from it
            for column, name in enumerate(names):
                if name in present:
                    rows, scores, ranks = present[name]
                    matrix[rows, column] = contributions(name, scores, ranks, config, bounds)
            matrices[key] = matrix
        return matrices[key]

    is_relevant = np.array([i in relevant for i in ids])
    out = np.empty(len(configs))
    for index, config in enumerate(configs):
        scores = contribution_matrix(config) @ np.array([config.weight(n) for n in names])
        best_relevant = scores[is_relevant].max()
        # Ties with the relevant hit count against it (a pessimistic, deterministic order).
        rank = int((scores >= best_relevant).sum() - (scores[is_relevant] >= best_relevant).sum()) + 1
        out[index] = rank if rank <= 10 else np.inf
    return out


@dataclass(frozen=True)
class TuningResult:
    fusion: FusionConfig
    train_mrr: float
    train_recall1: float
    default_train_mrr: float
    grid: int
    kept_default: bool  # no fusion beat the defaults by more than the tuning half's noise


# One-sided 95 %: a fusion replaces the defaults only when its paired MRR gain over them, less this
# many standard errors, is still positive. Without it the grid's best on one half is often noise
# that loses on the other (measured: README, "Tuning hybrid search").
CONFIDENCE_Z = 1.645


def tune_fusion(data: Sequence[QueryLists], relevant: Sequence[frozenset[str]], train: Sequence[int],
                default: FusionConfig) -> TuningResult:
    configs = candidates(default.depth)
    first = np.stack([_first_relevant_ranks(data[i], relevant[i], configs + [default]) for i in train])
    rr = 1.0 / first
    mrr = rr.mean(axis=0)
    recall1 = (first == 1).mean(axis=0)
    gain = rr[:, :-1] - rr[:, -1:]
    error = gain.std(axis=0, ddof=1) / np.sqrt(max(1, len(train))) if len(train) > 1 else np.zeros(len(configs))
    bound = gain.mean(axis=0) - CONFIDENCE_Z * error
    distance = [sum(abs(c.weight(n) - default.weight(n)) for n in RankedList) + (c.method != default.method)
                for c in configs]
    # Ties go to fewer lists (each costs a search), then to the fusion nearest the defaults.
    best = max(range(len(configs)), key=lambda j: (round(bound[j], 6), round(mrr[j], 6), -len(configs[j].active()),
                                                   -distance[j]))
    if bound[best] <= 0:
        return TuningResult(default, float(mrr[-1]), float(recall1[-1]), float(mrr[-1]), len(configs), True)
    return TuningResult(configs[best], float(mrr[best]), float(recall1[best]), float(mrr[-1]), len(configs), False)


def fit_calibration(ranked_scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]]) -> Calibration:
    """A logistic regression (scikit-learn) of relevance on each hit's :data:`~imagesearch.relevance.FEATURES`,
    from the ranked scores of each query's top hits and whether each hit is relevant."""
    from sklearn.linear_model import LogisticRegression

    rows = [features(scores) for scores in ranked_scores if len(scores)]
    y = np.asarray([label for query in labels for label in query], dtype=bool)
    if not rows or y.all() or not y.any():
        raise ValueError("calibration needs relevant and irrelevant hits")
    model = LogisticRegression(C=CALIBRATION_C, max_iter=2000).fit(np.concatenate(rows), y)
    return Calibration(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), int(y.size))


def top_scores(hits: Sequence[tuple[str, float]], relevant: frozenset[str],
               top: int = CALIBRATION_TOP) -> tuple[list[float], list[bool]]:
    chosen = list(hits)[:top]
    return [s for _, s in chosen], [i in relevant for i, _ in chosen]


def expected_calibration_error(relevances: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float:
    """Σ over equal-width bins of |accuracy − mean relevance| weighted by the bin's share of hits."""
    if not relevances:
        return float("nan")
    p = np.asarray(relevances, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            total += chosen.mean() * abs(y[chosen].mean() - p[chosen].mean())
    return float(total)


def precision_at(relevances: Sequence[float], labels: Sequence[bool], threshold: float = 0.5) -> tuple[float, int]:
    """Precision of the hits whose relevance is at least ``threshold``, and how many there are."""
    kept = [label for p, label in zip(relevances, labels) if p >= threshold]
    return (float(np.mean(kept)) if kept else float("nan")), len(kept)
