"""API keys: hashed storage, both header forms, isolation between keys, revocation, rate limit."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.store import Database
from service.store import repository as repo
from tests.service.conftest import service_settings

PREDICT = "/v1/models/fashion-mnist-cnn/predict"
TENSOR = {"tensor": [[0.5] * 28] * 28}


@pytest.fixture(scope="module")
def keyed(model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    db_path = tmp_path_factory.mktemp("auth") / "gga.db"
    settings = service_settings(model_repo, db_path, rate_limit=1.0, rate_limit_burst=3)
    db = Database(settings.database_url)
    db.upgrade()
    keys = {name: create_key(db, name) for name in ("alice", "bob", "carol")}
    with TestClient(create_app(settings)) as client:
        yield client, keys, db
    db.dispose()


def test_keys_are_stored_hashed(keyed) -> None:
    _, keys, db = keyed
    key_id, key = keys["alice"]
    row = repo.get_key(db, key_id)
    secret = key.split("_", 2)[2]
    assert secret not in str(row) and len(row["secret_hash"]) == 64 and row["salt"]


def test_key_required_except_health_and_metrics(keyed) -> None:
    client, _, _ = keyed
    r = client.post(PREDICT, json=TENSOR)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/models", headers={"X-API-Key": "gga_nope_nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/v2/models/fashion-mnist-cnn").status_code == 401
    for open_path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert client.get(open_path).status_code == 200


def test_the_model_repository_endpoints_need_a_key(keyed) -> None:
    client, _, _ = keyed
    for path in (
        "/v2/repository/index",
        "/v2/repository/models/fashion-mnist-cnn/load",
        "/v2/repository/models/fashion-mnist-cnn/unload",
    ):
        assert client.post(path).status_code == 401
        assert client.post(path, headers={"X-API-Key": "gga_nope_nope"}).status_code == 401
    assert client.get("/v2/models/fashion-mnist-cnn/ready", headers={}).status_code == 401


def test_isolation_between_keys(keyed) -> None:
    client, keys, _ = keyed
    alice = {"Authorization": f"Bearer {keys['alice'][1]}"}
    bob = {"X-API-Key": keys["bob"][1]}
    pid = client.post(PREDICT, json=TENSOR, headers=alice).json()["predictions"][0]["id"]
    assert client.get(f"/v1/predictions/{pid}", headers=alice).status_code == 200
    r = client.get(f"/v1/predictions/{pid}", headers=bob)
    assert r.status_code == 404 and r.json()["error"]["code"] == "prediction_not_found"
    listed = client.get("/v1/predictions", headers=bob).json()["predictions"]
    assert pid not in {p["id"] for p in listed}
    assert client.get("/v1/stats", headers=bob).json()["count"] == 0


def test_revoked_key_is_refused(keyed) -> None:
    client, keys, db = keyed
    key_id, key = keys["carol"]
    assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    assert repo.revoke_key(db, key_id)
    assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 401


def test_rate_limit_answers_429_with_retry_after(keyed) -> None:
    client, keys, _ = keyed
    headers = {"X-API-Key": keys["bob"][1]}
    codes = [client.get("/v1/models", headers=headers) for _ in range(8)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["error"]["code"] == "rate_limited"


def test_open_mode_with_no_keys(model_repo: Path, tmp_path: Path, caplog) -> None:
    with (
        caplog.at_level("WARNING"),
        TestClient(
            create_app(service_settings(model_repo, tmp_path / "open.db", warmup_batch_sizes=[1]))
        ) as client,
    ):
        assert client.get("/v1/models").status_code == 200
    assert any("OPEN" in r.getMessage() for r in caplog.records)
