"""``gga recalibrate MODEL --from-store``: the final calibration refit on stored predictions that
feedback confirmed correct, the old detector kept and restored by ``--rollback``, a refusal
below the minimum, and the recalibrated detector loaded by the running server."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from detectors.calibration import ConformalCalibrator
from detectors.fusion import CleanKNNFusion
from detectors.trust import TrustScorer
from gga_cli import main
from gga_cli.recalibrate import NotEnoughLabels, recalibrate_from_store
from models.card import ModelCard
from models.errors import GGAUserError
from service.app import create_app
from service.predictions import statistic_id
from service.store import Database
from tests.service.conftest import service_settings

MODEL = "fashion-mnist-cnn"


def darkened_traffic(fmnist_test) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and a darkened copy: a brightness shift the calibration did not have."""
    x = torch.cat([fmnist_test.float(), fmnist_test.float() * 0.6])
    return x, torch.cat([fmnist_test.y, fmnist_test.y])


def classify_with_feedback(client, x, y, wrong: torch.Tensor | None = None) -> list[dict]:
    """Classify ``x`` (then ``wrong``), post the true labels (and "wrong" for ``wrong``) as
    feedback; the stored feedback records."""
    predictions = []
    batches = (*x.split(16), *(wrong.split(16) if wrong is not None else ()))
    for batch in batches:
        r = client.post(f"/v1/models/{MODEL}/predict", json={"tensor": batch.tolist()})
        assert r.status_code == 200, r.text
        predictions += r.json()["predictions"]
    items = [{"id": p["id"], "label": int(t)} for p, t in zip(predictions, y, strict=False)]
    items += [{"id": p["id"], "correct": False} for p in predictions[len(y) :]]
    r = client.post("/v1/predictions/feedback", json={"feedback": items})
    assert r.status_code == 200, r.text
    return r.json()["feedback"]


def test_recalibration_from_confirmed_predictions_then_rollback(
    model_repo: Path, fmnist_test, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    folder = repo / MODEL
    original = (folder / "detector.json").read_bytes()
    settings = service_settings(repo, tmp_path / "gga.db", model_control="explicit")
    x, y = darkened_traffic(fmnist_test)
    with TestClient(create_app(settings)) as client:
        confirmed = [f for f in classify_with_feedback(client, x, y) if f["correct"]]
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


def test_refit_fusion_learns_from_traffic_and_calibrates_on_the_other_half(
    model_repo: Path, fmnist_test, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    folder = repo / MODEL
    weights = ModelCard.load(folder).weights_sha256
    shipped = TrustScorer.load(folder, weights)
    settings = service_settings(repo, tmp_path / "gga.db")
    x, y = darkened_traffic(fmnist_test)
    noise = torch.rand(48, *x.shape[1:], generator=torch.Generator().manual_seed(3))

    # The fixture's cauchy fusion is a fixed rule: nothing to refit, said so, nothing written.
    assert shipped.fusion.kind == "cauchy"
    with TestClient(create_app(settings)) as client:
        classify_with_feedback(client, x, y, noise)
    db = Database(settings.database_url)
    try:
        with pytest.raises(GGAUserError, match="learns nothing from data"):
            recalibrate_from_store(folder, MODEL, db, min_labelled=10, refit_fusion=True)
    finally:
        db.dispose()
    assert not (folder / "detector-versions").exists()

    # A learnt fusion (clean k-NN, its bank of clean surprise vectors) is refitted on traffic.
    rng = np.random.default_rng(0)
    views = shipped.fusion.views
    knn = CleanKNNFusion(views, k=5).fit(rng.uniform(size=(300, len(views))), np.zeros(300))
    TrustScorer(
        views=shipped.views,
        view_calibrators=shipped.view_calibrators,
        fusion=knn,
        calibrator=ConformalCalibrator(knn.statistic(rng.uniform(size=(300, len(views))))),
        alpha=shipped.alpha,
        engine_options=shipped.engine_options,
        model_name=shipped.model_name,
        weights_sha256=shipped.weights_sha256,
        provenance=shipped.provenance,
    ).save(folder)
    settings = service_settings(repo, tmp_path / "knn.db")
    with TestClient(create_app(settings)) as client:
        classify_with_feedback(client, x, y, noise)
    db = Database(settings.database_url)
    try:
        # 75 confirmed correct: enough to calibrate at 40, not to refit and calibrate.
        with pytest.raises(NotEnoughLabels, match=r"and 80 confirmed correct \(half to refit"):
            recalibrate_from_store(folder, MODEL, db, min_labelled=40, refit_fusion=True)
        used = recalibrate_from_store(folder, MODEL, db, min_labelled=10, refit_fusion=True)
        refitted = used["fusion_refitted"]
        new = TrustScorer.load(folder, weights)
        # The bank is the learning half of the confirmed-correct predictions; the calibration
        # the other half, each its re-fused statistic under the refitted fusion.
        assert new.fusion.kind == "clean-knn" and len(new.fusion.bank) == refitted["correct"]
        assert refitted["wrong"] >= 50 and used["n"] + refitted["correct"] >= 2 * 10
        assert new.calibrator.n == used["n"]
        assert not np.array_equal(new.fusion.bank, knn.bank)
    finally:
        db.dispose()
