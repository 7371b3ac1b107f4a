"""Relevance calibration (fitted with scikit-learn, applied with numpy) and the automatic cutoff."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch.dev import tuning
from imagesearch.relevance import Calibration, auto_cut, features


def _ranked_lists(rng: np.random.Generator, n: int) -> tuple[list[list[float]], list[list[bool]]]:
    """Queries whose first hit is relevant more often the further it stands above the rest."""
    scores, labels = [], []
    for _ in range(n):
        s = np.sort(rng.uniform(0.1, 0.8, 10))[::-1]
        s[0] += rng.uniform(0, 0.2)
        margin = s[0] - s[1]
        labels.append([bool(rng.uniform() < 1 / (1 + np.exp(-30 * (margin - 0.1))))] + [False] * 9)
        scores.append(list(s))
    return scores, labels


def test_applying_a_calibration_matches_scikit_learns_predict_proba():
    from sklearn.linear_model import LogisticRegression

    scores, labels = _ranked_lists(np.random.default_rng(0), 300)
    fitted = tuning.fit_calibration(scores, labels)
    x = np.concatenate([features(s) for s in scores])
    y = np.concatenate(labels)
    reference = LogisticRegression(C=tuning.CALIBRATION_C, max_iter=2000).fit(x, y)
    probe, _ = _ranked_lists(np.random.default_rng(1), 20)
    for ranked in probe:
        assert fitted.many(ranked) == pytest.approx(list(reference.predict_proba(features(ranked))[:, 1]), abs=1e-9)
    assert Calibration.from_json(fitted.to_json()) == fitted
    assert fitted.samples == 3000


def test_what_the_fit_learns_from_the_synthetic_queries():
    scores, labels = _ranked_lists(np.random.default_rng(0), 400)
    fitted = tuning.fit_calibration(scores, labels)
    high, low = fitted.many([0.95, 0.6, 0.5]), fitted.many([0.62, 0.6, 0.5])
    assert high[0] > low[0] > low[1]  # a higher best score, and a better rank, are likelier relevant
    assert high[1] < 0.1  # only first hits were ever relevant
    assert all(0 <= p <= 1 for p in high + low)


def test_a_calibration_needs_one_coefficient_per_feature_and_a_known_format():
    with pytest.raises(ValueError):
        Calibration((0.1, 0.2), 0.0)
    with pytest.raises(ValueError):
        Calibration.from_json({"method": "isotonic", "coefficients": [1, 2, 3], "intercept": 0})
    with pytest.raises(ValueError):
        tuning.fit_calibration([[0.5, 0.4]], [[True, True]])


def test_features_of_a_ranked_list():
    expected = np.array([[0.9, 0, 1], [0.7, 0.2, 0.5], [0.4, 0.5, 1 / 3]])
    assert np.allclose(features([0.9, 0.7, 0.4]), expected)
    assert features([]).shape == (0, 3)


def test_auto_cut_keeps_the_cluster_before_the_first_jump():
    assert auto_cut([0.90, 0.89, 0.88, 0.50, 0.49, 0.48]) == 3
    assert auto_cut([0.90, 0.40, 0.39, 0.38]) == 1
    # An even decline, noisy or not, has no jump: nothing is cut.
    assert auto_cut([0.9, 0.85, 0.84, 0.80, 0.79, 0.70]) == 6
    assert auto_cut([0.5, 0.4, 0.3, 0.2, 0.1]) == 5
    assert auto_cut([0.3, 0.3, 0.3]) == 3
    assert auto_cut([0.9, 0.1]) == 2 and auto_cut([]) == 0


def test_calibration_metrics():
    ece = tuning.expected_calibration_error([0.95, 0.95, 0.05, 0.05], [True, True, False, False])
    assert ece == pytest.approx(0.05)
    assert tuning.expected_calibration_error([0.8] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.3)
    assert tuning.precision_at([0.9, 0.6, 0.4], [True, False, True]) == (0.5, 2)
