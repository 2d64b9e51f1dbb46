"""Property-based requests generated from /openapi.json: no client input may yield a 5xx, on
SQLite and on PostgreSQL (whose column limits SQLite does not enforce), keys off and on (with an
admin key and repository control on, so that every route's own checks are reached)."""

from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.access import Scope
from service.app import create_app
from service.auth import create_key
from service.store import Database
from tests.service.conftest import _postgres_schema_url, service_settings


@pytest.fixture(
    scope="module",
    params=[
        ("sqlite", "open"),
        ("postgresql", "open"),
        ("sqlite", "keyed"),
        ("postgresql", "keyed"),
    ],
    ids=lambda p: "-".join(p),
)
def api_schema(
    request: pytest.FixtureRequest, model_repo: Path, tmp_path_factory: pytest.TempPathFactory
):
    """(schema, headers every call sends)."""
    backend, keys = request.param
    db = tmp_path_factory.mktemp("fuzz") / "gga.db"
    urls = iter([f"sqlite:///{db}"]) if backend == "sqlite" else _postgres_schema_url()
    for url in urls:
        settings = service_settings(
            model_repo, db, warmup_batch_sizes=[1], database_url=url, model_control="explicit"
        )
        headers = {}
        if keys == "keyed":
            store = Database(url)
            store.upgrade()
            headers = {"X-API-Key": create_key(store, "fuzz", scope=Scope.ADMIN)[1]}
            store.dispose()
        app = create_app(settings)
        with TestClient(app):  # runs the lifespan: models loaded, store migrated
            yield schemathesis.openapi.from_asgi("/openapi.json", app), headers


def test_no_server_errors(api_schema) -> None:
    api_schema, headers = api_schema
    # schemathesis' pytest plugin (from_fixture) does not run under pytest 9, so each operation's
    # strategy is driven with hypothesis directly; the checks are the same.
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    paths = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        paths.add(f"{operation.method.upper()} {operation.path}")

        strategies = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=16,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same examples every run: a failure here is reproducible
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query or ''} -> "
                    f"{response.status_code}: {response.text[:200]}"
                )

        call()
    assert operations >= 10 and len(statuses) >= 5 * operations
    # The feedback endpoints are fuzzed like the rest (issue 28).
    assert {
        "POST /v1/predictions/{prediction_id}/feedback",
        "GET /v1/predictions/{prediction_id}/feedback",
        "POST /v1/predictions/feedback",
    } <= paths, paths
    assert any(400 <= code < 500 for code in statuses)  # the fuzzer did reach the validators
    assert not failures, "\n".join(failures[:10])
