"""Fusion of the views' p-values: each rule's direction, the fused trust score's calibration on
exchangeable data, the leave-one-kind-out choice, and the whole scorer through detector.json."""

import json

import numpy as np
import pytest

from detectors.calibration import ConformalCalibrator
from detectors.fusion import FUSIONS, LogisticFusion, SingleFusion, fusion_from_dict
from detectors.persistence import DETECTOR_FILE
from detectors.trust import TrustScorer
from detectors.views import VIEWS
from gga_lab.metrics import auroc
from gga_lab.selection import GGA_VIEWS, Method, candidate_subsets, choose_fusion
from tests.detectors.synthetic import view_inputs

VIEW_NAMES = tuple(VIEWS)


def test_auroc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(2, 7, 40).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(50), np.ones(40)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(expected)


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_smaller_p_values_give_a_larger_statistic(kind):
    fusion = FUSIONS[kind](("a", "b"))
    if fusion.supervised:
        rng = np.random.default_rng(0)
        clean, odd = rng.uniform(0, 1, (100, 2)), rng.uniform(0, 0.05, (100, 2))
        fusion.fit(np.r_[clean, odd], np.r_[np.zeros(100), np.ones(100)])
    stats = fusion.statistic(np.array([[0.9, 0.8], [0.2, 0.3], [0.01, 0.02]]))
    assert stats[0] < stats[1] < stats[2]


def test_a_zero_p_value_stays_finite():
    for kind, cls in FUSIONS.items():
        if not cls.supervised:
            assert np.isfinite(cls(("a", "b")).statistic(np.array([[0.0, 0.5]]))).all(), kind


def test_fusions_round_trip_through_json():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, (60, 3))
    logistic = LogisticFusion(("a", "b", "c")).fit(p, (p.sum(1) < 1.5).astype(int))
    for fusion in [
        *(cls(("a", "b", "c")) for cls in FUSIONS.values() if not cls.supervised),
        logistic,
    ]:
        loaded = fusion_from_dict(json.loads(json.dumps(fusion.to_dict())))
        np.testing.assert_array_equal(loaded.statistic(p), fusion.statistic(p))
    with pytest.raises(ValueError, match="unknown fusion 'mean'"):
        fusion_from_dict({"kind": "mean", "views": ["a"]})


def test_logistic_fusion_without_untrusted_inputs_says_what_to_do():
    with pytest.raises(Exception, match="use an unsupervised fusion"):
        LogisticFusion(("a",)).fit(np.random.rand(10, 1), np.zeros(10))


def test_candidate_subsets_always_hold_a_gga_view():
    subsets = candidate_subsets(VIEW_NAMES)
    assert all(any(v in GGA_VIEWS for v in s) for s in subsets)
    assert ("gga-csm",) in subsets and VIEW_NAMES in subsets and ("energy",) not in subsets
    # A model whose views include no GGA view keeps every subset.
    assert len(candidate_subsets(("energy", "msp"))) == 3


def _scorer(fusion_kind: str, seed: int = 0, tail: str = "exponential") -> tuple[TrustScorer, dict]:
    """A scorer of every view fitted on synthetic clean inputs, with its parts' data."""
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
    scorer = TrustScorer(
        views=views,
        view_calibrators=cals,
        fusion=fusion,
        calibrator=ConformalCalibrator(np.zeros(20)),
        alpha=0.1,
        engine_options={"rescale_logits": True, "sign": True, "channel_max": True, "top_n": None},
        model_name="synthetic",
        weights_sha256="ab" * 32,
    )
    return scorer, {"tune": tune, "untrusted": untrusted}


@pytest.mark.parametrize("tail", ["none", "exponential"])
@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_fused_trust_is_uniform_on_exchangeable_clean_inputs(kind, tail):
    # Calibration and new clean inputs drawn alike: P(trust <= a) <= a for every a, and close
    # to a; over repeated calibrations the flag rate at alpha averages to alpha or below. The
    # views' tails change what the fusion sees, never the final calibration's promise.
    scorer, _ = _scorer(kind, tail=tail)
    rates = []
    grid = np.array([0.05, 0.1, 0.25, 0.5, 0.75])
    for rep in range(20):
        cal = view_inputs(300, False, 1000 + rep)
        scorer.calibrator = ConformalCalibrator(scorer.score(cal))
        trust = scorer.trust(view_inputs(300, False, 5000 + rep))
        rates.append([(trust <= a).mean() for a in grid])
    mean = np.mean(rates, axis=0)
    assert (mean <= grid + 0.02).all(), (kind, mean)
    assert (mean >= grid - 0.05).all(), (kind, mean)
    shifted = scorer.trust(view_inputs(200, True, 77))
    assert (shifted < scorer.alpha).mean() > 0.9


def test_scorer_round_trips_through_detector_json_with_identical_results(tmp_path):
    scorer, data = _scorer("logistic")
    scorer.calibrator = ConformalCalibrator(scorer.score(view_inputs(300, False, 9)))
    scorer.save(tmp_path)
    loaded = TrustScorer.load(tmp_path, "ab" * 32)
    for inputs in (data["tune"], data["untrusted"]["shifted"]):
        a, b = scorer.evaluate(inputs), loaded.evaluate(inputs)
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.trust, b.trust)
        for name in VIEW_NAMES:
            np.testing.assert_array_equal(a.views[name], b.views[name])
    saved = json.loads((tmp_path / DETECTOR_FILE).read_text())
    assert saved["format_version"] == 2 and set(saved["views"]) == set(VIEW_NAMES)
    assert loaded.summary()["views"] == list(VIEW_NAMES)
    assert all(v["calibration"]["tail"]["kind"] == "exponential" for v in saved["views"].values())
    # The shifted inputs lie beyond every view calibration: their p-values go below 1/(n+1).
    shifted = loaded.evaluate(data["untrusted"]["shifted"]).views
    assert min(p.min() for p in shifted.values()) < 1 / 301


def test_choice_measures_every_method_on_left_out_kinds():
    rng = np.random.default_rng(0)
    n = 200
    clean = {v: rng.uniform(0, 1, n) for v in ("gga-csm", "energy", "knn")}
    # "energy" sees the first kind, "knn" the second; gga-csm sees neither.
    a = {
        "gga-csm": rng.uniform(0, 1, n),
        "energy": rng.uniform(0, 0.02, n),
        "knn": rng.uniform(0, 1, n),
    }
    b = {
        "gga-csm": rng.uniform(0, 1, n),
        "energy": rng.uniform(0, 1, n),
        "knn": rng.uniform(0, 0.02, n),
    }
    choice = choose_fusion(("gga-csm", "energy", "knn"), clean, {"a": a, "b": b})
    assert set(choice.scores) == {m.name for m in choice_methods()}
    assert set(choice.per_kind[choice.method]) == {"a", "b"}
    # Learning a subset from kind "a" alone drops knn, which alone catches "b": left out, the
    # subsets fail where the rules over all views do not.
    assert choice.scores["fisher"] > choice.scores["fisher-subset"]
    assert choice.method in {"fisher", "cauchy", "tippett"}
    assert choice.fusion.views == ("gga-csm", "energy", "knn")


def choice_methods():
    from gga_lab.selection import default_methods

    return default_methods()


def _one_view_or_all_a_little(rng, n=400):
    """Clean inputs and two families of untrusted kind over four views.

    "one": a single view is sure (p = 0.002) while the others find the input typical, as the
    Mahalanobis view saw PGD on the standard CIFAR-10 model. "many1"/"many2": every view finds
    the input a little unusual (p between 0.1 and 0.4). Fisher ranks the "many" kinds above most
    clean inputs (a good AUROC) but flags almost none of them at alpha; Tippett flags every "one"
    input and ranks the "many" kinds at chance.
    """
    views = ("gga-csm", "energy", "knn", "mahalanobis")
    clean = {v: rng.uniform(0, 1, n) for v in views}
    one = {v: rng.uniform(0.9, 1.0, n) for v in views}
    one["mahalanobis"] = np.full(n, 0.002)
    untrusted = {"one": one}
    for kind in ("many1", "many2"):
        untrusted[kind] = {v: rng.uniform(0.1, 0.4, n) for v in views}
    return views, clean, untrusted


def test_the_criterion_decides_between_ranking_and_flagging():
    views, clean, untrusted = _one_view_or_all_a_little(np.random.default_rng(0))
    methods = (Method("fisher"), Method("tippett"))
    by_auroc = choose_fusion(views, clean, untrusted, methods=methods)
    by_flags = choose_fusion(views, clean, untrusted, methods=methods, criterion="tnr", alpha=0.05)
    assert by_auroc.method == "fisher"
    assert by_flags.method == "tippett"
    # The tnr scores are shares flagged at alpha on the left-out kind.
    assert by_flags.per_kind["tippett"]["one"] == 1.0
    assert by_flags.per_kind["fisher"]["many1"] < 0.1
    assert by_flags.to_dict()["criterion_name"] == "tnr"
    assert "flagged at alpha" in by_flags.to_dict()["criterion"]
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_fusion(views, clean, untrusted, methods=methods, criterion="accuracy")


def test_choice_needs_two_kinds():
    p = {"gga-csm": np.random.rand(50)}
    with pytest.raises(ValueError, match="two kinds"):
        choose_fusion(("gga-csm",), p, {"a": p})
    with pytest.raises(ValueError, match="20 clean"):
        choose_fusion(("gga-csm",), {"gga-csm": np.random.rand(5)}, {"a": p, "b": p})
    assert Method("fisher", "subset").name == "fisher-subset"


def test_single_fusion_takes_one_view():
    with pytest.raises(ValueError, match="one view"):
        SingleFusion(("a", "b"))
