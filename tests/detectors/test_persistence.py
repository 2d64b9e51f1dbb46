"""detector.json: exact round trip, weights check, clear errors."""

import json

import numpy as np
import pytest

from detectors.calibration import ConformalCalibrator
from detectors.loda import LODA
from detectors.logistic import LogisticDetector
from detectors.persistence import DETECTOR_FILE, DetectorFileError, DetectorNotFoundError
from detectors.trust import TrustScorer

NAMES = tuple(f"f{i}" for i in range(10))
OPTIONS = {"rescale_logits": True, "sign": True, "channel_max": True, "top_n": None}


def _scorer(detector, z_cal: np.ndarray) -> TrustScorer:
    return TrustScorer(
        detector=detector,
        calibrator=ConformalCalibrator(detector.predict_features(z_cal)),
        alpha=0.05,
        feature_names=NAMES,
        engine_options=OPTIONS,
        model_name="toy",
        weights_sha256="ab" * 32,
        provenance={"dataset": "synthetic", "seed": 0, "n_fit": 500, "n_cal": 200},
    )


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fit": rng.normal(size=(500, 10)),
        "cal": rng.normal(size=(200, 10)),
        "adv": rng.normal(2.0, 1.0, size=(300, 10)),
        "test": np.r_[rng.normal(size=(100, 10)), rng.normal(3.0, 1.0, size=(100, 10))],
    }


@pytest.mark.parametrize("kind", ["loda", "logistic"])
def test_round_trip_gives_identical_scores(tmp_path, data, kind) -> None:
    if kind == "loda":
        det = LODA(projections=50, bins=40, seed=5).fit(data["fit"])
    else:
        z = np.r_[data["fit"], data["adv"]]
        y = np.r_[np.zeros(len(data["fit"])), np.ones(len(data["adv"]))]
        det = LogisticDetector().fit(z, y)
    scorer = _scorer(det, data["cal"])
    scorer.save(tmp_path)
    text = (tmp_path / DETECTOR_FILE).read_text()
    assert json.loads(text)["detector"]["kind"] == kind  # plain JSON, no pickle
    loaded = TrustScorer.load(tmp_path, "ab" * 32)
    np.testing.assert_array_equal(loaded.score(data["test"]), scorer.score(data["test"]))
    np.testing.assert_array_equal(loaded.trust(data["test"]), scorer.trust(data["test"]))
    assert loaded.alpha == 0.05 and loaded.feature_names == NAMES
    assert loaded.engine_options == OPTIONS
    summary = loaded.summary()
    assert summary["kind"] == kind and summary["n_calibration"] == 200
    assert summary["dataset"] == "synthetic" and summary["created_at"]
    flags = loaded.flagged(loaded.trust(data["test"]))
    assert flags[100:].mean() > flags[:100].mean()


def test_refuses_detector_of_other_weights(tmp_path, data) -> None:
    _scorer(LODA(projections=5, bins=10).fit(data["fit"]), data["cal"]).save(tmp_path)
    with pytest.raises(DetectorFileError, match="gga fit mymodel"):
        TrustScorer.load(tmp_path, "cd" * 32, model_name="mymodel")


def test_missing_and_malformed_files(tmp_path, data) -> None:
    with pytest.raises(DetectorNotFoundError, match=f"run `gga fit {tmp_path.name}`"):
        TrustScorer.load(tmp_path, "ab" * 32)
    (tmp_path / DETECTOR_FILE).write_text("{not json")
    with pytest.raises(DetectorFileError, match="not readable JSON"):
        TrustScorer.load(tmp_path, "ab" * 32)
    _scorer(LODA(projections=5, bins=10).fit(data["fit"]), data["cal"]).save(tmp_path)
    payload = json.loads((tmp_path / DETECTOR_FILE).read_text())
    payload["detector"]["kind"] = "isolation-forest"
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(payload))
    with pytest.raises(DetectorFileError, match="unknown detector kind"):
        TrustScorer.load(tmp_path, "ab" * 32)
    del payload["calibration"]
    payload["detector"]["kind"] = "loda"
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(payload))
    with pytest.raises(DetectorFileError, match="malformed"):
        TrustScorer.load(tmp_path, "ab" * 32)


def test_scorer_rejects_wrong_width_and_nan(data) -> None:
    scorer = _scorer(LODA(projections=5, bins=10).fit(data["fit"]), data["cal"])
    with pytest.raises(ValueError, match="expects 10"):
        scorer.score(np.zeros((2, 9)))
    with pytest.raises(ValueError, match="NaN"):
        scorer.score(np.full((1, 10), np.nan))
