"""``/v1/keys`` on SQLite and PostgreSQL: an admin key creates, lists and revokes keys; the plain
key is in the create answer alone; predict and read keys, and open mode, get 403."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.access import Scope
from service.app import create_app
from service.auth import create_key
from service.store import Database
from service.store import repository as repo
from tests.service.conftest import service_settings, store_url

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"
TENSOR = {"tensor": [[0.5] * 28] * 28}
# A static admin key (GGA_API_KEYS) manages the stored keys too.
STATIC_ADMIN = "ops-static-4Rt9"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """(client, {name: headers}, db): a keyed server with a stored key of each scope."""
    folder = tmp_path_factory.mktemp("keys-api")
    for url in store_url(request.param, folder):
        settings = service_settings(
            model_repo,
            folder / "unused.db",
            database_url=url,
            warmup_batch_sizes=[1],
            api_keys=[f"admin:{STATIC_ADMIN}"],
            key_pepper="pepper-for-the-test",
        )
        db = Database(url)
        db.upgrade()
        headers = {
            scope.value: {"X-API-Key": create_key(db, scope.value, settings.key_pepper, scope)[1]}
            for scope in Scope
        }
        headers["static"] = {"X-API-Key": STATIC_ADMIN}
        with TestClient(create_app(settings)) as client:
            yield client, headers, db
        db.dispose()


def test_an_admin_key_creates_a_key_shown_once_that_works_at_once(served) -> None:
    client, headers, db = served
    r = client.post("/v1/keys", json={"name": "new client"}, headers=headers["admin"])
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    made = r.json()
    assert made["scope"] == "predict" and made["state"] == "active" and made["name"] == "new client"
    key = made["key"]
    assert key.startswith(f"gga_{made['id']}_")
    secret = key.split("_", 2)[2]
    row = repo.get_key(db, made["id"])
    assert row is not None and secret not in str(row)  # stored hashed, with the server's pepper
    assert client.post(PREDICT, json=TENSOR, headers={"X-API-Key": key}).status_code == 200

    listed = client.get("/v1/keys", headers=headers["static"])
    assert listed.status_code == 200 and secret not in listed.text and "key" not in listed.json()
    entry = next(k for k in listed.json()["keys"] if k["id"] == made["id"])
    assert entry == {k: v for k, v in made.items() if k != "key"}
    assert set(entry) == {"id", "name", "scope", "state", "created_at", "revoked_at"}

    read = client.post(
        "/v1/keys", json={"name": "grafana", "scope": "read"}, headers=headers["static"]
    )
    assert read.status_code == 201 and read.json()["scope"] == "read"
    dashboard = {"X-API-Key": read.json()["key"]}
    assert client.get("/v1/stats", headers=dashboard).status_code == 200
    assert client.post(PREDICT, json=TENSOR, headers=dashboard).status_code == 403


def test_a_revoked_key_is_refused_at_once_on_this_server(served) -> None:
    client, headers, _db = served
    made = client.post("/v1/keys", json={"name": "leaving"}, headers=headers["admin"]).json()
    key = {"X-API-Key": made["key"]}
    assert client.get("/v1/models", headers=key).status_code == 200  # its verdict now cached
    r = client.delete(f"/v1/keys/{made['id']}", headers=headers["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "revoked" and r.json()["revoked_at"] is not None
    assert "key" not in r.json()
    assert client.get("/v1/models", headers=key).status_code == 401  # not after the cache's 5 s
    again = client.delete(f"/v1/keys/{made['id']}", headers=headers["admin"])
    assert again.status_code == 404 and again.json()["error"]["code"] == "key_not_found"
    assert client.delete("/v1/keys/0123456789ab", headers=headers["admin"]).status_code == 404
    listed = client.get("/v1/keys", headers=headers["admin"]).json()["keys"]
    assert next(k for k in listed if k["id"] == made["id"])["state"] == "revoked"


def test_only_admin_keys_manage_keys(served) -> None:
    client, headers, _db = served
    target = client.post("/v1/keys", json={"name": "target"}, headers=headers["admin"]).json()
    for scope in ("predict", "read"):
        calls = [
            client.post("/v1/keys", json={"name": "x", "scope": "admin"}, headers=headers[scope]),
            client.get("/v1/keys", headers=headers[scope]),
            client.delete(f"/v1/keys/{target['id']}", headers=headers[scope]),
        ]
        for r in calls:
            assert r.status_code == 403, r.text
            assert f"'{scope}' scope" in r.json()["error"]["message"]
            assert "'admin'" in r.json()["error"]["message"]
    assert client.get("/v1/keys").status_code == 401
    assert client.post("/v1/keys", json={"name": "x"}).status_code == 401
    # The target was not revoked by the refused calls.
    assert client.get("/v1/models", headers={"X-API-Key": target["key"]}).status_code == 200


def test_key_requests_are_validated(served) -> None:
    client, headers, _db = served
    admin = headers["admin"]
    for body in (
        {"name": "x", "scope": "root"},
        {"name": ""},
        {"name": "x" * 129},
        {"name": "nul\x00byte"},
        {"name": "x", "extra": 1},
        {},
    ):
        r = client.post("/v1/keys", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
    assert client.delete("/v1/keys/not%20an%20id", headers=admin).status_code == 422
    assert client.post("/v1/keys", json={"name": "x" * 128}, headers=admin).status_code == 201


def test_open_mode_manages_no_keys(model_repo: Path, tmp_path: Path) -> None:
    settings = service_settings(model_repo, tmp_path / "open.db", warmup_batch_sizes=[1])
    with TestClient(create_app(settings)) as client:
        for r in (client.get("/v1/keys"), client.post("/v1/keys", json={"name": "first"})):
            assert r.status_code == 403, r.text
            assert "gga keys create NAME --scope admin" in r.json()["error"]["message"]
        assert client.get("/v1/models").status_code == 200  # still open: nothing was created


def test_the_key_routes_are_in_the_openapi_schema(served) -> None:
    client, _headers, _db = served
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/keys"]) == {"get", "post"} and set(paths["/v1/keys/{key_id}"]) == {
        "delete"
    }
    assert "201" in paths["/v1/keys"]["post"]["responses"]
    assert "403" in paths["/v1/keys/{key_id}"]["delete"]["responses"]
