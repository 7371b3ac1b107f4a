"""Hybrid search's fusion: the image kNN, caption kNN and keyword lists become one ranking.

Two methods, each with one weight per list (ARCHITECTURE.md, "Fusion and relevance"):

- ``rrf``: weighted reciprocal rank fusion, ``sum(w / (rrf_k + rank))``. Ranks only, so no list's
  score scale matters; but the fused value says nothing about how good a hit is.
- ``linear``: a convex combination of normalised scores, ``sum(w * n(score))``. Cosines already
  have a fixed scale, so they enter as they are (clipped to [0, 1]: a negative cosine is as
  irrelevant as zero); BM25 has none, so it is min-max normalised within the query, as
  OpenSearch's normalization processor does. A hit absent from a list gets 0 from it. The fused
  value keeps its meaning across queries, which is what makes it calibratable.

Every list is searched to ``depth`` (a setting, never a function of ``k``): OpenSearch's RRF
documentation shows a shallow depth flipping the winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from imagesearch.vocab import FusionMethod, RankedList

COSINE_LISTS = frozenset({RankedList.IMAGE, RankedList.CAPTION})


@dataclass(frozen=True)
class FusionConfig:
    method: FusionMethod = FusionMethod.LINEAR
    weights: Mapping[RankedList, float] = field(default_factory=lambda: {
        RankedList.IMAGE: 0.45, RankedList.CAPTION: 0.45, RankedList.KEYWORD: 0.1})
    depth: int = 100
    rrf_k: int = 60

    def weight(self, name: RankedList) -> float:
        return float(self.weights.get(name, 0.0))

    def active(self) -> list[RankedList]:
        """The lists that count (a zero weight list need not be searched)."""
        return [name for name in RankedList if self.weight(name) > 0]

    def to_json(self) -> dict[str, Any]:
        return {"method": str(self.method), "weights": {str(n): self.weight(n) for n in RankedList},
                "depth": self.depth, "rrf_k": self.rrf_k}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FusionConfig:
        weights = {RankedList(name): float(value) for name, value in data["weights"].items()}
        return cls(FusionMethod(data["method"]), weights, int(data["depth"]), int(data["rrf_k"]))


@dataclass(frozen=True)
class Entry:
    """Where a hit stands in one list: its rank (1-based) and the list's raw score."""

    rank: int
    score: float


@dataclass(frozen=True)
class Fused:
    id: str
    score: float
    parts: Mapping[RankedList, Entry]


def keyword_bounds(lists: Mapping[RankedList, Sequence[tuple[str, float]]]) -> tuple[float, float]:
    """The keyword list's lowest and highest BM25 score (both 0 without one): its min-max bounds."""
    keyword = [score for _, score in lists.get(RankedList.KEYWORD, ())]
    return (min(keyword), max(keyword)) if keyword else (0.0, 0.0)


def contributions(name: RankedList, scores: ArrayLike, ranks: ArrayLike, config: FusionConfig,
                  keyword_range: tuple[float, float]) -> np.ndarray:
    """What list ``name`` adds to the fused score of each of its hits (before its weight), from their
    raw ``scores`` and 1-based ``ranks`` in it. Vectorised, so the tuner re-ranks a whole grid of
    fusions with the very arithmetic :func:`fuse` uses."""
    if config.method == FusionMethod.RRF:
        return 1.0 / (config.rrf_k + np.asarray(ranks, dtype=np.float64))
    values = np.asarray(scores, dtype=np.float64)
    if name in COSINE_LISTS:
        return np.clip(values, 0.0, 1.0)
    low, high = keyword_range
    return np.ones_like(values) if high <= low else (values - low) / (high - low)


def fuse(lists: Mapping[RankedList, Sequence[tuple[str, float]]], config: FusionConfig) -> list[Fused]:
    """Every id in any list, best fused score first (ties by id, so the order is stable)."""
    parts: dict[str, dict[RankedList, Entry]] = {}
    for name, ranked in lists.items():
        for rank, (image_id, score) in enumerate(ranked, start=1):
            parts.setdefault(image_id, {})[name] = Entry(rank, float(score))
    bounds = keyword_bounds(lists)
    # By list and rank, not by id: a list naming an id twice counts once, its last entry (as in parts).
    weighted = {name: (config.weight(name) * contributions(
                    name, [score for _, score in ranked], np.arange(1, len(ranked) + 1), config, bounds)).tolist()
                for name, ranked in lists.items()}
    fused = [
        Fused(image_id, sum(weighted[name][entry.rank - 1] for name, entry in entries.items()), entries)
        for image_id, entries in parts.items()
    ]
    fused.sort(key=lambda f: (-f.score, f.id))
    return fused
