"""Fusion of the views' p-values: each rule's direction, the fused trust score's calibration on
exchangeable data (through ``TrustScorer.evaluate``, what the pipeline serves), and the whole
scorer through detector.json. The choice of a fusion is tested in tests/lab/test_selection.py."""

import json

import numpy as np
import pytest

from detectors.base import NotFittedError
from detectors.calibration import ConformalCalibrator
from detectors.fusion import FUSIONS, LogisticFusion, SingleFusion, fusion_from_dict
from detectors.persistence import DETECTOR_FILE
from detectors.trust import TrustScorer, fused_statistic
from detectors.views import VIEWS
from tests.detectors.synthetic import view_inputs

VIEW_NAMES = tuple(VIEWS)


def _fitted(kind: str, views: tuple[str, ...], seed: int = 0):
    """A fusion of ``views``, fitted where it learns: on uniform clean p-values, and against
    small ones for the supervised rule."""
    fusion = FUSIONS[kind](views)
    rng = np.random.default_rng(seed)
    clean, odd = rng.uniform(0, 1, (200, len(views))), rng.uniform(0, 0.05, (100, len(views)))
    if fusion.supervised:
        fusion.fit(np.r_[clean, odd], np.r_[np.zeros(200), np.ones(100)])
    elif fusion.fits_clean:
        fusion.fit(clean)
    return fusion


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_smaller_p_values_give_a_larger_statistic(kind):
    fusion = _fitted(kind, ("a", "b"))
    stats = fusion.statistic(np.array([[0.9, 0.8], [0.2, 0.3], [0.01, 0.02]]))
    if kind == "clean-knn":  # every input that k clean ones dominate ties at 0
        assert stats[0] <= stats[1] < stats[2]
    else:
        assert stats[0] < stats[1] < stats[2]


def test_a_zero_p_value_stays_finite():
    for kind, cls in FUSIONS.items():
        if not cls.supervised:
            stats = _fitted(kind, ("a", "b")).statistic(np.array([[0.0, 0.5]]))
            assert np.isfinite(stats).all(), kind


def test_clean_knn_never_lowers_the_statistic_when_a_view_grows_more_surprised():
    fusion = _fitted("clean-knn", ("a", "b", "c"))
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, (300, 3))
    column = rng.integers(3, size=300)
    lower = p.copy()
    lower[np.arange(300), column] *= rng.uniform(0, 1, 300)  # one view more surprised
    assert (fusion.statistic(lower) >= fusion.statistic(p)).all()


def test_clean_knn_keeps_one_views_strength_and_catches_the_broadly_unusual():
    # Nine views, a bank of 500 clean inputs, flags at the clean inputs' 95th percentile.
    rng = np.random.default_rng(0)
    views = tuple("abcdefghi")
    knn, fisher, tippett = (
        FUSIONS["clean-knn"](views),
        FUSIONS["fisher"](views),
        FUSIONS["tippett"](views),
    )
    knn.fit(rng.uniform(0, 1, (500, 9)))
    one_view = rng.uniform(0, 1, (500, 9))
    one_view[:, 0] = 1 / 1001  # the smallest p-value a view calibrated on 1,000 inputs gives
    broad = rng.uniform(0, 0.2, (500, 9))  # somewhat unusual everywhere
    clean = rng.uniform(0, 1, (5000, 9))

    def caught(fusion, p):
        return (fusion.statistic(p) > np.quantile(fusion.statistic(clean), 0.95)).mean()

    assert caught(knn, one_view) >= 0.99 and caught(fisher, one_view) < 0.7
    assert caught(knn, broad) >= 0.6 and caught(tippett, broad) < 0.4


def test_the_guarded_fusion_flags_what_a_free_score_alone_catches():
    views = ("gga-csm", "msp", "energy", "mahalanobis")
    rng = np.random.default_rng(4)
    guarded, fisher = _fitted("guarded", views), FUSIONS["fisher"](views)
    clean = rng.uniform(0, 1, (2000, 4))
    # Inputs only max softmax finds unusual (p 0.005), the three others find them ordinary.
    caught_by_msp = np.c_[rng.uniform(0.3, 1, (200, 1)), np.full((200, 1), 0.005),
                          rng.uniform(0.3, 1, (200, 2))]  # fmt: skip
    for fusion, least in ((guarded, 0.99), (fisher, 0.0)):
        threshold = np.quantile(fusion.statistic(clean), 0.95)
        caught = (fusion.statistic(caught_by_msp) > threshold).mean()
        assert caught >= least, (fusion.kind, caught)
    assert (
        fisher.statistic(caught_by_msp) > np.quantile(fisher.statistic(clean), 0.95)
    ).mean() < 0.5
    with pytest.raises(NotFittedError):
        FUSIONS["guarded"](views).statistic(clean)


def test_fusions_round_trip_through_json():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, (60, 3))
    views = ("a", "msp", "c")
    for fusion in [_fitted(kind, views) for kind in FUSIONS]:
        loaded = fusion_from_dict(json.loads(json.dumps(fusion.to_dict())))
        np.testing.assert_array_equal(loaded.statistic(p), fusion.statistic(p))
    with pytest.raises(ValueError, match="unknown fusion 'mean'"):
        fusion_from_dict({"kind": "mean", "views": ["a"]})


def test_logistic_fusion_without_untrusted_inputs_says_what_to_do():
    with pytest.raises(Exception, match="use an unsupervised fusion"):
        LogisticFusion(("a",)).fit(np.random.rand(10, 1), np.zeros(10))


def _parts(fusion_kind: str, seed: int = 0, tail: str = "exponential") -> tuple[dict, dict]:
    """Every view fitted on synthetic clean inputs, their calibrations and fusion, and the data.

    Returns:
        ``(keyword arguments of TrustScorer.calibrated but the inputs, {"tune", "untrusted"})``.
    """
    fit = view_inputs(600, False, seed)
    view_cal = view_inputs(300, False, seed + 1)
    tune = view_inputs(300, False, seed + 2)
    untrusted = {"shifted": view_inputs(150, True, seed + 3)}
    views = {n: cls().fit_features(fit) for n, cls in VIEWS.items()}
    cals = {
        n: ConformalCalibrator(v.predict_features(view_cal), tail=tail) for n, v in views.items()
    }

    def p(inputs):
        return np.stack([cals[n].trust(v.predict_features(inputs)) for n, v in views.items()], 1)

    fusion = FUSIONS[fusion_kind](VIEW_NAMES)
    if fusion.supervised:
        fusion.fit(np.r_[p(tune), p(untrusted["shifted"])], np.r_[np.zeros(300), np.ones(150)])
    elif fusion.fits_clean:
        fusion.fit(p(tune))
    parts = {
        "views": views,
        "view_calibrators": cals,
        "fusion": fusion,
        "alpha": 0.1,
        "engine_options": {
            "rescale_logits": True,
            "sign": True,
            "channel_max": True,
            "top_n": None,
        },
        "model_name": "synthetic",
        "weights_sha256": "ab" * 32,
    }
    return parts, {"tune": tune, "untrusted": untrusted}


@pytest.mark.parametrize("tail", ["none", "exponential"])
@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_fused_trust_is_uniform_on_exchangeable_clean_inputs(kind, tail):
    # Calibration and new clean inputs drawn alike: P(trust <= a) <= a for every a, and close
    # to a; over repeated calibrations the flag rate at alpha averages to alpha or below. The
    # views' tails change what the fusion sees, never the final calibration's promise.
    parts, _ = _parts(kind, tail=tail)
    rates, flag_rates = [], []
    grid = np.array([0.05, 0.1, 0.25, 0.5, 0.75])
    for rep in range(20):
        scorer = TrustScorer.calibrated(view_inputs(300, False, 1000 + rep), **parts)
        result = scorer.evaluate(view_inputs(300, False, 5000 + rep))
        rates.append([(result.trust <= a).mean() for a in grid])
        flag_rates.append(result.flagged.mean())
    mean = np.mean(rates, axis=0)
    assert (mean <= grid + 0.02).all(), (kind, mean)
    assert (mean >= grid - 0.05).all(), (kind, mean)
    # The flag is the trust score below alpha: false alarms at about alpha on clean inputs.
    flag_rate = np.mean(flag_rates)
    assert scorer.alpha - 0.05 <= flag_rate <= scorer.alpha + 0.02, (kind, flag_rate)
    shifted = scorer.evaluate(view_inputs(200, True, 77))
    np.testing.assert_array_equal(shifted.flagged, shifted.trust < scorer.alpha)
    assert shifted.flagged.mean() > 0.9


def test_scorer_round_trips_through_detector_json_with_identical_results(tmp_path):
    parts, data = _parts("logistic")
    scorer = TrustScorer.calibrated(view_inputs(300, False, 9), **parts)
    scorer.save(tmp_path)
    loaded = TrustScorer.load(tmp_path, "ab" * 32)
    for inputs in (data["tune"], data["untrusted"]["shifted"]):
        a, b = scorer.evaluate(inputs), loaded.evaluate(inputs)
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.trust, b.trust)
        np.testing.assert_array_equal(a.flagged, b.flagged)
        for name in VIEW_NAMES:
            np.testing.assert_array_equal(a.views[name], b.views[name])
    saved = json.loads((tmp_path / DETECTOR_FILE).read_text())
    assert saved["format_version"] == 2 and set(saved["views"]) == set(VIEW_NAMES)
    assert loaded.summary()["views"] == list(VIEW_NAMES)
    assert all(v["calibration"]["tail"]["kind"] == "exponential" for v in saved["views"].values())
    # The shifted inputs lie beyond every view calibration: their p-values go below 1/(n+1).
    shifted = loaded.evaluate(data["untrusted"]["shifted"]).views
    assert min(p.min() for p in shifted.values()) < 1 / 301


def test_a_calibrated_scorer_calibrates_its_fused_statistic():
    parts, data = _parts("fisher", tail="none")
    scorer = TrustScorer.calibrated(data["tune"], **parts)
    statistic, p_values = fused_statistic(
        parts["views"], parts["view_calibrators"], parts["fusion"], data["tune"]
    )
    np.testing.assert_array_equal(scorer.calibrator.sorted_scores, np.sort(statistic))
    result = scorer.evaluate(data["tune"])
    np.testing.assert_array_equal(result.score, statistic)
    assert result.views.keys() == p_values.keys() == set(VIEW_NAMES)
    # The single fusion calibrates its one view's score, and that p-value is the trust score.
    single = {**parts, "fusion": SingleFusion(("gga-csm",)), "view_calibrators": {}}
    single["views"] = {"gga-csm": parts["views"]["gga-csm"]}
    scorer = TrustScorer.calibrated(data["tune"], **single)
    raw = parts["views"]["gga-csm"].predict_features(data["tune"])
    np.testing.assert_array_equal(scorer.calibrator.sorted_scores, np.sort(raw))
    result = scorer.evaluate(data["tune"])
    np.testing.assert_array_equal(result.views["gga-csm"], result.trust)
    with pytest.raises(ValueError, match="does not have"):
        TrustScorer.calibrated(data["tune"], **{**parts, "views": {}})
    with pytest.raises(ValueError, match="have no calibration"):
        TrustScorer.calibrated(data["tune"], **{**parts, "view_calibrators": {}})


def test_single_fusion_takes_one_view():
    with pytest.raises(ValueError, match="one view"):
        SingleFusion(("a", "b"))
