"""docker-compose.yml validates and wires the stack the way docs/deployment.md describes."""

import os
import subprocess

import pytest
import yaml

from tests.deploy.conftest import REPO, require_tool

SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
    "GGA_KEY_PEPPER": "pepper-secret",
}


def _config(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    tool = require_tool("docker-compose")
    # Only the given stack variables: nothing from the caller's environment leaks in.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GGA_", "POSTGRES_", "GRAFANA_"))
    }
    return subprocess.run(
        [tool, "-f", str(REPO / "docker-compose.yml"), "config"],
        cwd=REPO,
        env={**env, **env_overrides},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    # It used to fall back to a password written in the file (and Grafana's admin/admin).
    result = _config({k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr


def test_secrets_are_never_written_in_the_file() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    assert "gga-local-only" not in text and ":-admin}" not in text
    for name in SECRETS:
        assert f"${{{name}:?" in text and f"${{{name}:-" not in text


def test_services(compose: dict) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "gga",
        "proxy",
        "prometheus",
        "grafana",
    }


def test_replicas_share_rate_limits_and_do_not_migrate(compose: dict) -> None:
    env = compose["services"]["gga"]["environment"]
    assert env["GGA_REDIS_URL"] == "redis://redis:6379/0"
    assert env["GGA_RUN_MIGRATIONS"] == "false"
    assert env["GGA_API_KEYS_REQUIRED"] == "true"
    assert compose["services"]["gga"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_grace_period_outlasts_the_shutdown_window(compose: dict) -> None:
    # The window used to be request timeout + 5 s + drain (35 s and more) against compose's 30 s:
    # a deploy could kill a replica mid-drain.
    from service.settings import Settings

    gga = compose["services"]["gga"]
    window = float(gga["environment"]["GGA_SHUTDOWN_TIMEOUT_S"])
    settings = Settings(_env_file=None, shutdown_timeout_s=window)
    assert settings.graceful_timeout_s + settings.drain_timeout_s == pytest.approx(window)
    grace = gga["stop_grace_period"]
    grace_s = float(grace.removesuffix("s")) if isinstance(grace, str) else float(grace)
    assert grace_s >= window + 5, (grace, window)


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
