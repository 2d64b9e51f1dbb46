"""docker-compose.yml validates and wires the stack the way docs/deployment.md describes."""

import os
import subprocess

import pytest
import yaml

from tests.deploy.conftest import REPO, require_tool, run_tool


@pytest.fixture(scope="module")
def compose() -> dict:
    tool = require_tool("docker-compose")
    # Validate with an empty environment for the stack's variables: the defaults must suffice.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GGA_", "POSTGRES_"))}
    args = [tool, "-f", str(REPO / "docker-compose.yml")]
    quiet = subprocess.run(
        [*args, "config", "-q"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert quiet.returncode == 0, quiet.stderr
    return yaml.safe_load(run_tool([*args, "config"]).stdout)


def test_services(compose: dict) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "migrate",
        "gga",
        "proxy",
        "prometheus",
        "grafana",
    }


def test_postgres_has_named_volume_and_health_check(compose: dict) -> None:
    pg = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(str(v).startswith("postgres-data:") or _source(v) == "postgres-data"
               for v in pg["volumes"])  # fmt: skip
    assert "postgres-data" in compose["volumes"]


def _source(volume) -> str:
    return volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]


def test_gga_uses_postgres_after_migrations(compose: dict) -> None:
    gga, migrate = compose["services"]["gga"], compose["services"]["migrate"]
    url = gga["environment"]["GGA_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    assert migrate["environment"]["GGA_DATABASE_URL"] == url
    assert migrate["command"] == ["gga", "db", "upgrade"]
    assert gga["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert gga["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert gga["command"] == ["gga", "serve", "--host", "0.0.0.0", "--port", "8000"]
    # Scalable: no fixed host port on the replicas, the proxy publishes one.
    assert "ports" not in gga
    assert compose["services"]["proxy"]["ports"]


def test_mounted_repo_files_exist(compose: dict) -> None:
    for name in ("proxy", "prometheus", "grafana"):
        for volume in compose["services"][name]["volumes"]:
            source = _source(volume)
            if source.startswith("/"):
                assert os.path.exists(source), f"{name} mounts missing {source}"
    mounts = {_source(v) for v in compose["services"]["prometheus"]["volumes"]}
    assert str(REPO / "deploy" / "prometheus") in mounts
    grafana = {_source(v) for v in compose["services"]["grafana"]["volumes"]}
    assert str(REPO / "deploy" / "grafana" / "provisioning") in grafana
    assert str(REPO / "deploy" / "grafana" / "dashboards") in grafana


def test_images_are_pinned(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), (name, image)
