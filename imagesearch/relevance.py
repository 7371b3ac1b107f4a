"""Scores that mean something: a calibrated probability of relevance, and the automatic cutoff.

``relevance`` is P(relevant) from a logistic regression that ``imagesearch eval --tune`` fits on a
labelled set, per mode and per model identities, over three features of each hit in its ranked
list: its score, how far it is below the best hit's score, and 1/rank. Why not a map from score
alone (isotonic or Platt): the boundary between relevant and not moves from query to query
(Immich's maintainer on immich-app/immich#5996), and a score alone cannot see where this query's
boundary is; the gap to the query's best hit and the rank can. Measured on the held-out half of
procedural seed 2 (``docs/eval-tuned.md``): hybrid precision at relevance >= 0.5 went from 0.79
(isotonic on the score) to 0.91, at the same calibration error (0.005). Applying it is a dot
product and a sigmoid, which is what scikit-learn's ``predict_proba`` computes; the service does
not need scikit-learn.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = ("score", "gap_to_best", "inverse_rank")
JUMP = 2.0


def features(scores: Sequence[float]) -> np.ndarray:
    """One row per hit of a ranked list (best first): :data:`FEATURES`."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return np.empty((0, len(FEATURES)))
    return np.stack([s, s[0] - s, 1.0 / np.arange(1, s.size + 1)], axis=1)


@dataclass(frozen=True)
class Calibration:
    """A logistic regression over :data:`FEATURES`."""

    coefficients: tuple[float, ...]
    intercept: float
    samples: int = 0

    def __post_init__(self) -> None:
        if len(self.coefficients) != len(FEATURES):
            raise ValueError(f"a calibration needs {len(FEATURES)} coefficients ({', '.join(FEATURES)})")

    def many(self, scores: Sequence[float]) -> list[float]:
        """The relevance of each hit of a ranked list (best first), from its scores."""
        z = features(scores) @ np.asarray(self.coefficients) + self.intercept
        return [float(p) for p in 1.0 / (1.0 + np.exp(-z))]

    def to_json(self) -> dict[str, Any]:
        return {"method": "logistic", "features": list(FEATURES), "coefficients": list(self.coefficients),
                "intercept": self.intercept, "samples": self.samples}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        if data.get("method") != "logistic" or list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"unknown calibration {data.get('method')!r} over {data.get('features')!r}")
        return cls(tuple(float(c) for c in data["coefficients"]), float(data["intercept"]), int(data.get("samples", 0)))


def auto_cut(scores: Sequence[float]) -> int:
    """How many of ``scores`` (best first) to keep: all of them when there is no jump.

    Needs no calibration. It is Weaviate's ``autocut`` with one guard: the scores are scaled onto
    [0, 1] from the first to the last, and the list is cut before the first local maximum of how
    far the scaled scores have fallen beyond a straight line from first to last, provided the drop
    into it is at least ``JUMP`` times the mean drop. Without the guard, noise in a list that
    declines evenly cuts it after the first hit.
    """
    n = len(scores)
    if n < 3 or scores[0] - scores[-1] <= 1e-9:
        return n
    fallen = [(scores[0] - s) / (scores[0] - scores[-1]) for s in scores]
    beyond = [f - i / (n - 1) for i, f in enumerate(fallen)]
    for i in range(1, n - 1):
        jump = fallen[i] - fallen[i - 1] >= JUMP / (n - 1)
        if jump and beyond[i] > beyond[i - 1] and beyond[i] > beyond[i + 1]:
            return i
    return n
