"""Repository control (load, unload) is off by default; on, it needs an admin key, or loopback
in open mode. A real app on a real SQLite store (the live server's checks: test_safe_defaults)."""

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.access import Caller, Scope, UnsafeModelControl, check_model_control, is_loopback
from service.app import create_app
from service.auth import create_key
from service.errors import Forbidden, ModelControlDisabled
from service.store import Database
from service.store import repository as repo
from tests.service.conftest import service_settings

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"
TENSOR = {"tensor": [[0.5] * 28] * 28}


def _repository(action: str) -> str:
    return f"/v2/repository/models/{MODEL}/{action}"


def test_open_mode_with_the_defaults_refuses_load_and_unload(model_repo: Path, tmp_path: Path):
    settings = service_settings(model_repo, tmp_path / "gga.db", warmup_batch_sizes=[1])
    assert settings.model_control == "none"
    with TestClient(create_app(settings)) as client:
        for action in ("unload", "load"):
            r = client.post(_repository(action))
            assert r.status_code == 403, r.text
            assert "GGA_MODEL_CONTROL=explicit" in r.json()["error"]
        assert client.post(PREDICT, json=TENSOR).status_code == 200  # still serving
        assert client.post("/v2/repository/index").status_code == 200  # reading is allowed


def test_open_mode_on_loopback_may_control_when_asked(model_repo: Path, tmp_path: Path):
    settings = service_settings(
        model_repo, tmp_path / "gga.db", warmup_batch_sizes=[1], model_control="explicit"
    )
    with TestClient(create_app(settings)) as client:
        assert client.post(_repository("unload")).status_code == 200
        assert client.post(PREDICT, json=TENSOR).status_code == 404
        assert client.post(_repository("load")).status_code == 200
        assert client.post(PREDICT, json=TENSOR).status_code == 200


def test_open_mode_on_a_public_address_is_refused_at_startup(model_repo: Path, tmp_path: Path):
    settings = service_settings(
        model_repo, tmp_path / "gga.db", warmup_batch_sizes=[1], model_control="explicit",
        host="0.0.0.0",
    )  # fmt: skip
    with pytest.raises(UnsafeModelControl, match="admin key"), TestClient(create_app(settings)):
        pass


def test_keys_on_a_public_address_start_and_open_mode_later_is_still_refused(
    model_repo: Path, tmp_path: Path
) -> None:
    settings = service_settings(
        model_repo, tmp_path / "gga.db", warmup_batch_sizes=[1], model_control="explicit",
        host="0.0.0.0", auth_cache_s=0.2,
    )  # fmt: skip
    db = Database(settings.database_url)
    db.upgrade()
    admin_id, admin = create_key(db, "operator", scope=Scope.ADMIN)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post(_repository("unload")).status_code == 401
            r = client.post(_repository("unload"), headers={"X-API-Key": admin})
            assert r.status_code == 200
            assert client.post(_repository("load"), headers={"X-API-Key": admin}).status_code == 200
            assert repo.revoke_key(db, admin_id)  # the last key: the server is open now
            time.sleep(0.5)
            r = client.post(_repository("unload"))
            assert r.status_code == 403 and "loopback" in r.json()["error"], r.text
            assert client.post(PREDICT, json=TENSOR).status_code == 200
    finally:
        db.dispose()


def test_the_control_rules() -> None:
    admin, predict, read = (Caller("k", s) for s in (Scope.ADMIN, Scope.PREDICT, Scope.READ))
    anonymous = Caller(None, Scope.PREDICT)
    for caller in (admin, predict, read, anonymous):
        with pytest.raises(ModelControlDisabled):
            check_model_control(caller, "none", "127.0.0.1")
    check_model_control(admin, "explicit", "0.0.0.0")
    check_model_control(anonymous, "explicit", "127.0.0.1")
    check_model_control(anonymous, "explicit", "::1")
    for caller, host in ((predict, "127.0.0.1"), (read, "127.0.0.1"), (anonymous, "0.0.0.0")):
        with pytest.raises(Forbidden):
            check_model_control(caller, "explicit", host)
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost")] == [True] * 4
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "gga.example.org"))
