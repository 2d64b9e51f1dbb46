"""``gga recalibrate MODEL --from-store``: the final calibration refit on stored predictions that
feedback confirmed correct, the old detector kept and restored by ``--rollback``, a refusal
below the minimum, and the recalibrated detector loaded by the running server."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from detectors.trust import TrustScorer
from gga_cli import main
from gga_cli.recalibrate import NotEnoughLabels, recalibrate_from_store
from models.card import ModelCard
from service.app import create_app
from service.predictions import statistic_id
from service.store import Database
from tests.service.conftest import service_settings

MODEL = "fashion-mnist-cnn"


def test_recalibration_from_confirmed_predictions_then_rollback(
    model_repo: Path, fmnist_test, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    folder = repo / MODEL
    original = (folder / "detector.json").read_bytes()
    settings = service_settings(repo, tmp_path / "gga.db", model_control="explicit")
    # A darkened copy of the images: a brightness shift the calibration images did not have.
    x = torch.cat([fmnist_test.float(), fmnist_test.float() * 0.6])
    y = torch.cat([fmnist_test.y, fmnist_test.y])
    with TestClient(create_app(settings)) as client:
        predictions = []
        for start in range(0, len(x), 16):
            body = {"tensor": x[start : start + 16].tolist()}
            r = client.post(f"/v1/models/{MODEL}/predict", json=body)
            assert r.status_code == 200, r.text
            predictions += r.json()["predictions"]
        items = [{"id": p["id"], "label": int(t)} for p, t in zip(predictions, y, strict=True)]
        r = client.post("/v1/predictions/feedback", json={"feedback": items})
        assert r.status_code == 200, r.text
        confirmed = [f for f in r.json()["feedback"] if f["correct"]]
        stored = [client.get(f"/v1/predictions/{f['prediction_id']}").json() for f in confirmed]

        db = Database(settings.database_url)
        try:
            with pytest.raises(NotEnoughLabels, match="at least"):
                recalibrate_from_store(folder, MODEL, db, min_labelled=len(confirmed) + 1)
            assert (folder / "detector.json").read_bytes() == original  # refused: untouched
            used = recalibrate_from_store(folder, MODEL, db, min_labelled=20)
        finally:
            db.dispose()

        # The new final calibration is exactly the confirmed predictions' fused statistics.
        weights = ModelCard.load(folder).weights_sha256
        new = TrustScorer.load(folder, weights)
        fused = sorted(p["scores"]["fused"] for p in stored)
        assert used["n"] == len(confirmed) == new.calibrator.n
        np.testing.assert_allclose(new.calibrator.sorted_scores, fused)
        assert new.provenance["recalibrations"][-1]["statistic"] == statistic_id(new)
        assert {p["scores"]["statistic"] for p in stored} == {statistic_id(new)}
        old_versions = list((folder / "detector-versions").glob("detector-*.json"))
        assert [v.read_bytes() for v in old_versions] == [original]

        # Served through the repository load: the model's detector now reports the new size.
        assert client.post(f"/v2/repository/models/{MODEL}/load").status_code == 200
        detector = client.get(f"/v1/models/{MODEL}").json()["detector"]
        assert detector["n_calibration"] == len(confirmed)

    assert main(["recalibrate", MODEL, "--rollback", "--repo", str(repo)]) == 0
    assert (folder / "detector.json").read_bytes() == original
    assert main(["recalibrate", MODEL, "--rollback", "--repo", str(repo)]) == 2  # nothing left
