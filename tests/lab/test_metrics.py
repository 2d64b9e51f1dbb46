"""Metrics checked against scikit-learn and hand computations."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from gga_lab.metrics import OODMetrics, auroc, tnr_at_tpr


def test_tnr_at_95_tpr_by_hand() -> None:
    trusted = np.arange(1.0, 21.0)  # 20 scores; 95% = 19 accepted -> threshold 19
    untrusted = np.array([0.5, 18.0, 19.0, 19.5, 20.0, 30.0])
    # Rejected: scores > 19 -> 19.5, 20, 30 -> 3 of 6.
    assert tnr_at_tpr(trusted, untrusted) == pytest.approx(0.5)
    assert tnr_at_tpr(trusted, untrusted, tpr=1.0) == pytest.approx(1 / 6)  # only 30 > 20


def test_matches_sklearn_on_random_scores() -> None:
    rng = np.random.default_rng(1)
    trusted = rng.normal(0, 1, 300)
    untrusted = rng.normal(1.5, 1, 200)
    m = OODMetrics()
    m.update(trusted[:100], np.zeros(100)).update(trusted[100:], np.arange(200))
    m.update(untrusted, -np.ones(200))
    out = m.compute()
    labels_out = np.r_[np.zeros(300), np.ones(200)]
    scores = np.r_[trusted, untrusted]
    assert out["AUROC"] == pytest.approx(roc_auc_score(labels_out, scores))
    assert out["AUPR-OUT"] == pytest.approx(average_precision_score(labels_out, scores))
    assert out["AUPR-IN"] == pytest.approx(average_precision_score(1 - labels_out, -scores))
    # TNR@95TPR from sorted trusted scores, by definition.
    t = np.sort(trusted)[int(np.ceil(0.95 * 300)) - 1]
    assert out["TNR95TPR"] == pytest.approx(np.mean(untrusted > t))
    assert out["FPR95TPR"] == pytest.approx(1 - out["TNR95TPR"])


def test_perfect_and_inverted_detectors() -> None:
    perfect = OODMetrics().update([0, 1, 2, 10, 11], [0, 0, 0, -1, -1]).compute()
    assert perfect["AUROC"] == 1.0 and perfect["TNR95TPR"] == 1.0
    inverted = OODMetrics().update([10, 11, 12, 0, 1], [0, 0, 0, -1, -1]).compute()
    assert inverted["AUROC"] == 0.0 and inverted["TNR95TPR"] == 0.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="both"):
        OODMetrics().update([1.0, 2.0], [0, 1]).compute()
    with pytest.raises(ValueError, match="NaN"):
        OODMetrics().update([np.nan], [0])
    with pytest.raises(ValueError, match="shape"):
        OODMetrics().update([1.0, 2.0], [0])


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(2, 7, 40).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(50), np.ones(40)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(expected)
