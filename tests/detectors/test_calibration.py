"""Conformal calibration: exact formula, uniform p-values, false alarms at alpha, the tail.

The flag the service raises (trust below alpha) is ``TrustScorer.evaluate``'s, tested with the
fused trust score in test_fusion.py; here the p-values below alpha are counted directly."""

import numpy as np
import pytest
from scipy import stats

from detectors.base import DetectorFitError
from detectors.calibration import ConformalCalibrator, check_alpha, exponential_tail_scale


def test_formula_by_hand() -> None:
    cal = ConformalCalibrator([3.0, 1.0, 2.0, *range(10, 27)])  # n = 20
    # s = 2.0: calibration scores >= 2 are 2, 3 and the 17 of 10..26 -> 19; (1 + 19) / 21.
    np.testing.assert_allclose(
        cal.trust([2.0, 0.0, 100.0, 26.0]), [20 / 21, 21 / 21, 1 / 21, 2 / 21]
    )


def test_trust_in_unit_interval_and_nan_is_untrusted() -> None:
    cal = ConformalCalibrator(np.arange(50.0))
    t = cal.trust([-1e9, 1e9, np.nan])
    assert t[0] == 1.0 and t[1] == pytest.approx(1 / 51) and t[2] == 0.0


def test_p_values_uniform_on_exchangeable_data() -> None:
    # Marginally over calibration draws, a clean input's p-value is uniform on {1, ..., n+1}/(n+1).
    rng = np.random.default_rng(0)
    n, trials = 39, 4000
    values = []
    for _ in range(trials):
        data = rng.standard_normal(n + 1)
        values.append(ConformalCalibrator(data[:n]).trust(data[n:])[0])
    counts = np.bincount(np.rint(np.array(values) * (n + 1)).astype(int), minlength=n + 2)[1:]
    assert counts.sum() == trials and len(counts) == n + 1
    assert stats.chisquare(counts).pvalue > 0.001


def test_false_alarm_rate_within_binomial_tolerance() -> None:
    rng = np.random.default_rng(1)
    cal = ConformalCalibrator(rng.exponential(size=2000))
    test_scores = rng.exponential(size=20000)
    trust = cal.trust(test_scores)
    for alpha in (0.01, 0.05, 0.1):
        rate = (trust < alpha).mean()
        # 4 sigma of the test draw's binomial noise plus the calibration set's own.
        sigma = np.sqrt(alpha * (1 - alpha) * (1 / len(test_scores) + 1 / cal.n))
        assert abs(rate - alpha) < 4 * sigma, (alpha, rate)


def test_exponential_tail_is_conformal_inside_and_keeps_ranking_beyond() -> None:
    rng = np.random.default_rng(2)
    scores = rng.exponential(size=1000)
    plain, tailed = ConformalCalibrator(scores), ConformalCalibrator(scores, tail="exponential")
    inside = np.r_[rng.uniform(-1, scores.max(), 500), scores.max()]
    np.testing.assert_array_equal(tailed.trust(inside), plain.trust(inside))
    beyond = scores.max() + np.array([1e-9, 0.5, 1.0, 5.0, 50.0])
    t = tailed.trust(beyond)
    # Plain p-values tie at 1/(n+1) beyond the maximum; the tail keeps them apart.
    assert np.all(plain.trust(beyond) == 1 / 1001)
    assert t[0] == pytest.approx(1 / 1001) and np.all(np.diff(t) < 0) and t[-1] > 0
    # An exponential sample's tail scale estimates its mean, 1.
    assert tailed.tail_scale == pytest.approx(1.0, abs=0.3)
    np.testing.assert_allclose(t[2] / t[1], np.exp(-0.5 / tailed.tail_scale))


def test_tail_scale_by_hand_and_ties() -> None:
    # n = 20: k = max(10, 5% of 20) = 10 scores over the 11th largest, 10.
    scores = np.r_[np.zeros(9), 10.0, np.arange(11.0, 21.0)]
    assert exponential_tail_scale(np.sort(scores)) == pytest.approx(np.mean(np.arange(1, 11)))
    tied = ConformalCalibrator(np.ones(30), tail="exponential")
    assert tied.tail_scale == 0.0 and tied.trust([5.0])[0] == pytest.approx(1 / 31)


def test_round_trip_keeps_the_tail() -> None:
    scores = np.random.default_rng(3).standard_normal(200)
    for tail in ("none", "exponential"):
        cal = ConformalCalibrator(scores, tail=tail)
        again = ConformalCalibrator.from_dict(cal.to_dict())
        probe = np.linspace(-4, 8, 50)
        np.testing.assert_array_equal(again.trust(probe), cal.trust(probe))
        assert again.tail == tail
    # A file written before tails existed has none.
    assert ConformalCalibrator.from_dict({"sorted_scores": list(scores)}).tail == "none"


def test_errors() -> None:
    with pytest.raises(DetectorFitError, match="n-cal"):
        ConformalCalibrator(np.arange(5.0))
    with pytest.raises(DetectorFitError, match="NaN"):
        ConformalCalibrator([*range(30), np.nan])
    with pytest.raises(ValueError, match="alpha"):
        check_alpha(1.5)
    with pytest.raises(ValueError, match="tail"):
        ConformalCalibrator(np.arange(30.0), tail="pareto")
