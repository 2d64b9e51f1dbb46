"""API keys on SQLite and PostgreSQL: hashed storage, both header forms, scopes (predict, read,
admin), isolation between keys, repository control, revocation within the cache bound; static
keys (``GGA_API_KEYS``) with a scope."""

import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.access import Scope, parse_static_keys
from service.app import create_app
from service.auth import create_key
from service.settings import Settings
from service.store import Database
from service.store import repository as repo
from tests.service.conftest import service_settings, store_url
from tests.service.support import LiveServer

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"
INFER = f"/v2/models/{MODEL}/infer"
UNLOAD = f"/v2/repository/models/{MODEL}/unload"
LOAD = f"/v2/repository/models/{MODEL}/load"
TENSOR = {"tensor": [[0.5] * 28] * 28}
V2_BODY = {
    "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28], "data": [0.5] * 784}]
}
# Short, so that the revocation test can wait past it; the default is 5 s.
CACHE_S = 0.5
SCOPES = {
    "alice": Scope.PREDICT,
    "bob": Scope.PREDICT,
    "carol": Scope.PREDICT,
    "dashboard": Scope.READ,
    "operator": Scope.ADMIN,
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def keyed(request, model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """A keyed server with repository control on, and a key of each scope."""
    folder = tmp_path_factory.mktemp("auth")
    for url in store_url(request.param, folder):
        settings = service_settings(
            model_repo,
            folder / "unused.db",
            database_url=url,
            auth_cache_s=CACHE_S,
            model_control="explicit",
        )
        db = Database(settings.database_url)
        db.upgrade()
        keys = {name: create_key(db, name, scope=scope) for name, scope in SCOPES.items()}
        with TestClient(create_app(settings)) as client:
            yield client, keys, db
        db.dispose()


def _key(keys: dict, name: str) -> dict[str, str]:
    return {"X-API-Key": keys[name][1]}


def test_keys_are_stored_hashed_with_their_scope(keyed) -> None:
    _, keys, db = keyed
    key_id, key = keys["alice"]
    row = repo.get_key(db, key_id)
    secret = key.split("_", 2)[2]
    assert secret not in str(row) and len(row["secret_hash"]) == 64 and row["salt"]
    assert row["scope"] == "predict"
    assert repo.get_key(db, keys["operator"][0])["scope"] == "admin"


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
    for path in ("/v2/repository/index", LOAD, UNLOAD):
        assert client.post(path).status_code == 401
        assert client.post(path, headers={"X-API-Key": "gga_nope_nope"}).status_code == 401
    assert client.get("/v2/models/fashion-mnist-cnn/ready", headers={}).status_code == 401


def test_isolation_between_predict_keys(keyed) -> None:
    client, keys, _ = keyed
    alice = {"Authorization": f"Bearer {keys['alice'][1]}"}
    bob = _key(keys, "bob")
    pid = client.post(PREDICT, json=TENSOR, headers=alice).json()["predictions"][0]["id"]
    assert client.get(f"/v1/predictions/{pid}", headers=alice).status_code == 200
    r = client.get(f"/v1/predictions/{pid}", headers=bob)
    assert r.status_code == 404 and r.json()["error"]["code"] == "prediction_not_found"
    listed = client.get("/v1/predictions", headers=bob).json()["predictions"]
    assert pid not in {p["id"] for p in listed}
    assert client.get("/v1/stats", headers=bob).json()["count"] == 0
    assert client.get("/v1/stats", headers=alice).json()["count"] >= 1


def test_a_read_key_sees_every_prediction_and_cannot_classify(keyed) -> None:
    client, keys, _ = keyed
    dashboard = _key(keys, "dashboard")
    r = client.post(PREDICT, json=TENSOR, headers=_key(keys, "carol"))
    pid = r.json()["predictions"][0]["id"]
    assert client.post(PREDICT, json=TENSOR, headers=_key(keys, "alice")).status_code == 200
    assert client.get(f"/v1/predictions/{pid}", headers=dashboard).json()["id"] == pid
    listed = client.get("/v1/predictions", headers=dashboard).json()["predictions"]
    assert pid in {p["id"] for p in listed}
    everyone = client.get("/v1/stats", headers=dashboard).json()["count"]
    assert everyone > client.get("/v1/stats", headers=_key(keys, "carol")).json()["count"] >= 1
    assert client.get("/v1/models", headers=dashboard).status_code == 200
    assert client.post("/v2/repository/index", headers=dashboard).status_code == 200
    refused = client.post(PREDICT, json=TENSOR, headers=dashboard)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "'read' scope" in refused.json()["error"]["message"]
    v2 = client.post(INFER, json=V2_BODY, headers=dashboard)
    assert v2.status_code == 403 and "'predict' or 'admin'" in v2.json()["error"]
    assert client.post(UNLOAD, headers=dashboard).status_code == 403


def test_only_an_admin_key_controls_the_repository(keyed) -> None:
    client, keys, _ = keyed
    operator = _key(keys, "operator")
    for name in ("alice", "dashboard"):
        r = client.post(UNLOAD, headers=_key(keys, name))
        assert r.status_code == 403 and "'admin'" in r.json()["error"], r.text
        assert client.post(LOAD, headers=_key(keys, name)).status_code == 403
    assert client.post(PREDICT, json=TENSOR, headers=_key(keys, "alice")).status_code == 200

    assert client.post(UNLOAD, headers=operator).status_code == 200
    assert client.post(PREDICT, json=TENSOR, headers=_key(keys, "alice")).status_code == 404
    assert client.post(LOAD, headers=operator).status_code == 200
    assert client.post(PREDICT, json=TENSOR, headers=_key(keys, "alice")).status_code == 200
    # An admin key classifies too, and reads every key's predictions.
    r = client.post(PREDICT, json=TENSOR, headers=operator)
    assert r.status_code == 200
    everyone = client.get("/v1/stats", headers=operator).json()["count"]
    assert everyone == client.get("/v1/stats", headers=_key(keys, "dashboard")).json()["count"]


def test_revocation_and_scope_changes_take_effect_within_the_cache_bound(keyed) -> None:
    client, keys, db = keyed
    key_id, key = keys["carol"]
    assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    assert repo.revoke_key(db, key_id)
    time.sleep(CACHE_S + 0.3)  # past the bound; before it the cached verdict may still stand
    assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 401

    bob_id, _ = keys["bob"]
    assert client.post(PREDICT, json=TENSOR, headers=_key(keys, "bob")).status_code == 200
    assert repo.set_key_scope(db, bob_id, "read")
    time.sleep(CACHE_S + 0.3)
    assert client.post(PREDICT, json=TENSOR, headers=_key(keys, "bob")).status_code == 403
    assert repo.set_key_scope(db, bob_id, "predict")


def test_token_bucket_answers_429_with_retry_after(model_repo: Path, tmp_path: Path) -> None:
    settings = service_settings(
        model_repo, tmp_path / "bucket.db", warmup_batch_sizes=[1], rate_limit=1.0,
        rate_limit_burst=3,
    )  # fmt: skip
    db = Database(settings.database_url)
    db.upgrade()
    _, key = create_key(db, "bucket")
    with TestClient(create_app(settings)) as client:
        codes = [client.get("/v1/models", headers={"X-API-Key": key}) for _ in range(8)]
    db.dispose()
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


def test_the_key_cache_is_bounded_and_expires() -> None:
    from service.access import Caller
    from service.auth import _Verdicts

    verdicts = _Verdicts(ttl_s=0.2, capacity=3)
    for i in range(10):  # a client sending random keys cannot grow it
        verdicts.put(bytes([i]), None)
    assert [verdicts.get(bytes([i]))[0] for i in range(10)] == [False] * 7 + [True] * 3
    verdicts.put(b"k", Caller("k", Scope.ADMIN))
    assert verdicts.get(b"k") == (True, Caller("k", Scope.ADMIN))
    time.sleep(0.3)
    assert verdicts.get(b"k") == (False, None)
    assert _Verdicts(ttl_s=0).get(b"k") == (False, None)


def test_static_keys_take_a_scope_and_old_entries_stay_predict_keys(
    model_repo: Path, tmp_path: Path
) -> None:
    """``GGA_API_KEYS=admin:KEY,KEY2``: the admin key controls the repository (with
    ``GGA_MODEL_CONTROL=explicit``), the plain entry is a predict key as before scopes."""
    settings = service_settings(
        model_repo,
        tmp_path / "static.db",
        warmup_batch_sizes=[1],
        model_control="explicit",
        api_keys="admin:ops-7Yq2, client-9Xw4 ,read:dash-3Kd8",
    )
    ops, client_key, dash = ({"X-API-Key": k} for k in ("ops-7Yq2", "client-9Xw4", "dash-3Kd8"))
    with TestClient(create_app(settings)) as client:
        for caller in (client_key, dash):
            r = client.post(UNLOAD, headers=caller)
            assert r.status_code == 403 and "'admin'" in r.json()["error"], r.text
        # The key is what follows the scope: the whole entry is no key.
        assert client.post(UNLOAD, headers={"X-API-Key": "admin:ops-7Yq2"}).status_code == 401
        pid = client.post(PREDICT, json=TENSOR, headers=client_key).json()["predictions"][0]["id"]
        assert client.post(PREDICT, json=TENSOR, headers=dash).status_code == 403

        assert client.post(UNLOAD, headers=ops).status_code == 200
        assert client.post(PREDICT, json=TENSOR, headers=client_key).status_code == 404
        assert client.post(LOAD, headers=ops).status_code == 200
        assert client.post(PREDICT, json=TENSOR, headers=client_key).status_code == 200
        # The admin key reads every key's predictions; the predict key only its own.
        assert client.get(f"/v1/predictions/{pid}", headers=ops).status_code == 200
        ops_pid = client.post(PREDICT, json=TENSOR, headers=ops).json()["predictions"][0]["id"]
        assert client.get(f"/v1/predictions/{ops_pid}", headers=client_key).status_code == 404


def test_static_key_entries_are_parsed_backward_compatibly() -> None:
    assert parse_static_keys(["k1", "Admin:k2", "read: k3", "predict:abc:def", "a1:b", "::x"]) == [
        (Scope.PREDICT, "k1"),  # an entry without a scope keeps the predict scope
        (Scope.ADMIN, "k2"),  # scope names are not case-sensitive
        (Scope.READ, "k3"),
        (Scope.PREDICT, "abc:def"),  # a key that begins with letters and a colon
        (Scope.PREDICT, "a1:b"),  # not a run of letters before the colon: no scope
        (Scope.PREDICT, "::x"),
    ]
    assert parse_static_keys(["k", "predict:k"]) == [(Scope.PREDICT, "k")] * 2
    bad = {
        "GGA_API_KEYS entry 2 begins with a word and a colon that name no scope": ["k", "adm:s3"],
        "GGA_API_KEYS entry 1 gives the scope 'admin' but no key after the colon": ["admin: "],
        "entries 1 and 2 give the same key with different scopes (predict, admin)": [
            "k",
            "admin:k",
        ],
    }
    for message, entries in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_static_keys(entries)
        with pytest.raises(ValueError, match="GGA_API_KEYS") as raised:
            Settings(_env_file=None, api_keys=entries)
        assert "s3" not in str(raised.value) and "'k'" not in str(raised.value)  # never echoed


def test_a_static_key_with_an_unknown_scope_stops_the_start(model_repo: Path, tmp_path: Path):
    server = LiveServer(
        model_repo, f"sqlite:///{tmp_path / 'gga.db'}", tmp_path, GGA_API_KEYS="amdin:Zq81-secret"
    )
    with pytest.raises(RuntimeError, match="exited early"):
        server.start(timeout_s=120)
    assert server.process is not None and server.process.wait(30) != 0
    log = server.log.read_text()
    assert "GGA_API_KEYS entry 1 begins with a word and a colon that name no scope" in log, log
    assert "Zq81-secret" not in log and "amdin" not in log  # a secret is never logged
