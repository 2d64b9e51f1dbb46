"""detector.json: the weights check, clear errors, and format-1 files (a single LODA or logistic
detector on the ten GGA features) still loading and scoring as they did."""

import json

import numpy as np
import pytest

from detectors.calibration import ConformalCalibrator
from detectors.features import FEATURE_NAMES
from detectors.loda import LODA
from detectors.logistic import LogisticDetector
from detectors.persistence import DETECTOR_FILE, DetectorFileError, DetectorNotFoundError
from detectors.trust import TrustScorer
from tests.detectors.synthetic import view_inputs

OPTIONS = {"rescale_logits": True, "sign": True, "channel_max": True, "top_n": None}
SHA = "ab" * 32


def _v1_file(folder, detector, calibration_scores) -> None:
    """A detector.json as releases before the multi-view scorer wrote it (format 1)."""
    payload = {
        "format_version": 1,
        "model": {"name": "toy", "weights_sha256": SHA},
        "detector": {"kind": detector.kind, "params": detector.get_params()},
        "feature_names": list(FEATURE_NAMES),
        "engine_options": OPTIONS,
        "calibration": {
            "alpha": 0.05,
            "n": len(calibration_scores),
            "sorted_scores": sorted(calibration_scores.tolist()),
        },
        "provenance": {"dataset": "synthetic", "seed": 0, "n_fit": 500, "n_cal": 200},
    }
    (folder / DETECTOR_FILE).write_text(json.dumps(payload))


@pytest.fixture
def data():
    return {
        "fit": view_inputs(500, False, 0),
        "cal": view_inputs(200, False, 1),
        "adv": view_inputs(300, True, 2),
        "test": view_inputs(100, False, 3),
        "odd": view_inputs(100, True, 4),
    }


@pytest.mark.parametrize("kind", ["loda", "logistic"])
def test_format_1_file_loads_and_scores_as_before(tmp_path, data, kind) -> None:
    if kind == "loda":
        det = LODA(projections=50, bins=40, seed=5).fit(data["fit"].gga)
    else:
        z = np.r_[data["fit"].gga, data["adv"].gga]
        y = np.r_[np.zeros(500), np.ones(300)]
        det = LogisticDetector().fit(z, y)
    cal_scores = det.predict_features(data["cal"].gga)
    _v1_file(tmp_path, det, cal_scores)
    loaded = TrustScorer.load(tmp_path, SHA)
    calibrator = ConformalCalibrator(cal_scores)
    for part in ("test", "odd"):
        expected_score = det.predict_features(data[part].gga)
        result = loaded.evaluate(data[part])
        np.testing.assert_array_equal(result.score, expected_score)
        np.testing.assert_array_equal(result.trust, calibrator.trust(expected_score))
        np.testing.assert_array_equal(result.views["gga-paper"], result.trust)
    assert loaded.view_names == ("gga-paper",) and loaded.fusion.kind == "single"
    summary = loaded.summary()
    assert summary["kind"] == "gga-paper" and summary["n_calibration"] == 200
    assert summary["dataset"] == "synthetic" and summary["format_version"] == 1
    odd_flags = loaded.evaluate(data["odd"]).flagged
    assert odd_flags.mean() > loaded.evaluate(data["test"]).flagged.mean()


def test_refuses_detector_of_other_weights(tmp_path, data) -> None:
    det = LODA(projections=5, bins=10).fit(data["fit"].gga)
    _v1_file(tmp_path, det, det.predict_features(data["cal"].gga))
    with pytest.raises(DetectorFileError, match="gga fit mymodel"):
        TrustScorer.load(tmp_path, "cd" * 32, model_name="mymodel")


def test_missing_and_malformed_files(tmp_path, data) -> None:
    with pytest.raises(DetectorNotFoundError, match=f"run `gga fit {tmp_path.name}`"):
        TrustScorer.load(tmp_path, SHA)
    (tmp_path / DETECTOR_FILE).write_text("{not json")
    with pytest.raises(DetectorFileError, match="not readable JSON"):
        TrustScorer.load(tmp_path, SHA)
    det = LODA(projections=5, bins=10).fit(data["fit"].gga)
    _v1_file(tmp_path, det, det.predict_features(data["cal"].gga))
    payload = json.loads((tmp_path / DETECTOR_FILE).read_text())
    payload["detector"]["kind"] = "isolation-forest"
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(payload))
    with pytest.raises(DetectorFileError, match="unknown detector kind"):
        TrustScorer.load(tmp_path, SHA)
    del payload["calibration"]
    payload["detector"]["kind"] = "loda"
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(payload))
    with pytest.raises(DetectorFileError, match="malformed"):
        TrustScorer.load(tmp_path, SHA)
    payload["format_version"] = 7
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(payload))
    with pytest.raises(DetectorFileError, match="format version 1 or 2"):
        TrustScorer.load(tmp_path, SHA)


def test_format_2_file_naming_an_unknown_view_says_to_refit(tmp_path, data) -> None:
    from detectors.fusion import FisherFusion
    from detectors.views import VIEWS

    views = {n: VIEWS[n]().fit_features(data["fit"]) for n in ("gga-csm", "energy")}
    cals = {n: ConformalCalibrator(v.predict_features(data["cal"])) for n, v in views.items()}
    scorer = TrustScorer(
        views,
        cals,
        FisherFusion(("gga-csm", "energy")),
        ConformalCalibrator(np.arange(30.0)),
        0.05,
        OPTIONS,
        "toy",
        SHA,
    )
    scorer.save(tmp_path)
    payload = json.loads((tmp_path / DETECTOR_FILE).read_text())
    payload["views"]["telepathy"] = payload["views"].pop("energy")
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(payload))
    with pytest.raises(DetectorFileError, match=r"unknown view 'telepathy'.*gga fit"):
        TrustScorer.load(tmp_path, SHA)


def test_a_view_that_cannot_score_gives_trust_zero_not_an_error(data) -> None:
    from detectors.fusion import SingleFusion
    from detectors.views.gga import GGAPaperView

    view = GGAPaperView(projections=5, bins=10).fit_features(data["fit"])
    scorer = TrustScorer(
        {view.name: view},
        {},
        SingleFusion((view.name,)),
        ConformalCalibrator(view.predict_features(data["cal"])),
        0.05,
        OPTIONS,
        "toy",
        SHA,
    )
    broken = data["test"].take(slice(0, 3))
    broken.gga = broken.gga.copy()
    broken.gga[1] = np.nan
    result = scorer.evaluate(broken)
    assert result.trust[1] == 0.0 and result.flagged[1]
    assert result.trust[0] > 0 and np.isnan(result.score[1])
