"""Helpers for the deployment tests: repository paths and the external tools they run."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"


def require_tool(name: str, install_hint: str = "bash .ci/deploy-tools.sh") -> str:
    """The path of executable ``name``; skips the test when it is missing, fails under CI.

    CI (``CI=true``) installs every tool first, so a missing one there is a broken pipeline,
    not a reason to skip.
    """
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` not found on PATH (install it with: {install_hint})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_tool(args: list[str], cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a tool, capture its output and fail the test with that output when it exits non-zero."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
