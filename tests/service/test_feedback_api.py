"""Feedback over HTTP (TestClient, real model and store): who may post, 404 and 422, batches,
the stored scores, the flag's quality in /v1/stats and as gauges, the History filter."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.access import Scope
from service.app import create_app
from service.auth import create_key
from service.store import Database
from tests.service.conftest import service_settings

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"
SCOPES = {
    "alice": Scope.PREDICT,
    "bob": Scope.PREDICT,
    "carol": Scope.PREDICT,
    "dash": Scope.READ,
    "ops": Scope.ADMIN,
}


@pytest.fixture(scope="module")
def keyed(model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("feedback")
    settings = service_settings(model_repo, folder / "gga.db")
    db = Database(settings.database_url)
    db.upgrade()
    keys = {name: {"X-API-Key": create_key(db, name, scope=s)[1]} for name, s in SCOPES.items()}
    with TestClient(create_app(settings)) as client:
        yield client, keys
    db.dispose()


def _predict(client: TestClient, pngs: list[bytes], headers: dict) -> list[dict]:
    files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    r = client.post(PREDICT, files=files, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_the_stored_prediction_keeps_the_scores_recalibration_needs(keyed, fmnist_pngs) -> None:
    client, keys = keyed
    (p,) = _predict(client, fmnist_pngs[:1], keys["alice"])
    stored = client.get(f"/v1/predictions/{p['id']}", headers=keys["alice"]).json()
    views = client.get(f"/v1/models/{MODEL}", headers=keys["alice"]).json()["detector"]["views"]
    assert isinstance(stored["scores"]["fused"], float)
    assert set(stored["scores"]["views"]) == set(views)
    assert stored["feedback"] is None


def test_owner_and_readers_may_post_others_get_404(keyed, fmnist_pngs) -> None:
    client, keys = keyed
    (p,) = _predict(client, fmnist_pngs[:1], keys["alice"])
    url = f"/v1/predictions/{p['id']}/feedback"
    assert client.post(url, json={"correct": True}, headers=keys["bob"]).status_code == 404
    assert client.post(url, json={"correct": True}, headers={}).status_code == 401
    names = client.get(f"/v1/models/{MODEL}", headers=keys["alice"]).json()["class_names"]
    wrong = (p["label"] + 1) % 10
    answers = [
        ("alice", {"correct": True}, (True, p["label"])),
        ("dash", {"label": wrong}, (False, wrong)),
        ("ops", {"label": names[p["label"]]}, (True, p["label"])),
        ("alice", {"label": names[wrong].upper()}, (False, wrong)),  # a name, whatever its case
        ("alice", {"correct": False}, (False, None)),
    ]
    revisions = []
    for who, body, (correct, label) in answers:
        r = client.post(url, json=body, headers=keys[who])
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["correct"], out["label"]) == (correct, label)
        assert out["class_name"] == (names[label] if label is not None else None)
        revisions.append(out["revision"])
    assert revisions == sorted(revisions)
    stored = client.get(f"/v1/predictions/{p['id']}", headers=keys["alice"]).json()["feedback"]
    assert (stored["correct"], stored["label"]) == (False, None)
    history = client.get(url, headers=keys["dash"]).json()["feedback"]
    assert [(h["correct"], h["label"]) for h in history] == [a[2] for a in answers]
    assert client.get(url, headers=keys["bob"]).status_code == 404
    unknown = "/v1/predictions/01JUNKNOWN0000000000000000/feedback"
    assert client.post(unknown, json={"correct": True}, headers=keys["ops"]).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"correct": True, "label": 1},
        {"correct": "yes"},
        {"correct": 1},
        {"label": 1.0},
        {"label": True},
        {"label": ""},
        {"label": 10},
        {"label": -1},
        {"label": "not a class"},
        {"label": "x" * 200},
        {"correct": True, "extra": 1},
        [],
        "correct",
        None,
    ],
)
def test_a_malformed_body_gets_422(keyed, fmnist_pngs, body) -> None:
    client, keys = keyed
    (p,) = _predict(client, fmnist_pngs[:1], keys["alice"])
    r = client.post(f"/v1/predictions/{p['id']}/feedback", json=body, headers=keys["alice"])
    assert r.status_code == 422, r.text
    assert client.get(f"/v1/predictions/{p['id']}/feedback", headers=keys["alice"]).json() == {
        "feedback": []
    }


def test_a_batch_is_all_or_nothing(keyed, fmnist_pngs) -> None:
    client, keys = keyed
    mine = _predict(client, fmnist_pngs[:3], keys["alice"])
    (theirs,) = _predict(client, fmnist_pngs[3:4], keys["bob"])
    items = [{"id": p["id"], "correct": True} for p in mine]
    for bad in ({"id": theirs["id"], "correct": True}, {"id": mine[0]["id"], "label": 99}):
        r = client.post(
            "/v1/predictions/feedback", json={"feedback": [*items, bad]}, headers=keys["alice"]
        )
        assert r.status_code in (404, 422), r.text
        for p in mine:
            assert (
                client.get(f"/v1/predictions/{p['id']}", headers=keys["alice"]).json()["feedback"]
                is None
            )
    r = client.post("/v1/predictions/feedback", json={"feedback": items}, headers=keys["alice"])
    assert r.status_code == 200, r.text
    assert [f["prediction_id"] for f in r.json()["feedback"]] == [p["id"] for p in mine]
    assert (
        client.post(
            "/v1/predictions/feedback", json={"feedback": []}, headers=keys["alice"]
        ).status_code
        == 422
    )
    # The readers' batch reaches every key's predictions.
    both = [
        {"id": theirs["id"], "label": (theirs["label"] + 1) % 10},
        {"id": mine[0]["id"], "correct": False},
    ]
    assert (
        client.post(
            "/v1/predictions/feedback", json={"feedback": both}, headers=keys["dash"]
        ).status_code
        == 200
    )


def test_stats_gauges_and_the_history_filter_show_the_feedback(keyed, fmnist_pngs) -> None:
    client, keys = keyed
    preds = _predict(client, fmnist_pngs[8:16], keys["carol"])
    items = [{"id": p["id"], "correct": i % 2 == 0} for i, p in enumerate(preds)]
    assert (
        client.post(
            "/v1/predictions/feedback", json={"feedback": items}, headers=keys["carol"]
        ).status_code
        == 200
    )

    quality = client.get("/v1/stats?window=1h", headers=keys["carol"]).json()["flag_quality"][MODEL]
    flagged = [p["flagged"] for p in preds]
    assert quality["labelled"] == 8 and quality["wrong"] == 4
    assert quality["flagged"] == sum(flagged)
    assert quality["flagged_wrong"] == sum(f for i, f in enumerate(flagged) if i % 2)
    assert (
        quality["alpha"]
        == client.get(f"/v1/models/{MODEL}", headers=keys["carol"]).json()["detector"]["alpha"]
    )
    low, high = quality["false_alarm_interval"]
    assert 0 <= low <= high <= 1
    everyone = client.get("/v1/stats", headers=keys["dash"]).json()["flag_quality"][MODEL]
    assert everyone["labelled"] >= quality["labelled"]

    page = client.get("/v1/predictions?feedback=wrong&limit=500", headers=keys["carol"]).json()
    wrong_ids = {p["id"] for i, p in enumerate(preds) if i % 2}
    assert wrong_ids <= {p["id"] for p in page["predictions"]}
    assert all(p["feedback"]["correct"] is False for p in page["predictions"])
    assert client.get("/v1/predictions?feedback=maybe", headers=keys["carol"]).status_code == 422

    collector = next(
        c
        for c in client.app.state.metrics.registry._collector_to_names
        if type(c).__name__ == "FlagQualityRefresher"
    )
    collector.refresh()
    body = client.get("/metrics").text
    assert f'gga_flag_quality_labelled{{model="{MODEL}",window="24h"}}' in body
    assert f'gga_flag_quality_alpha{{model="{MODEL}",window="24h"}}' in body
