"""The tool plumbing of the deployment tests: CI never skips, deploy-tools.sh is idempotent."""

import shutil
import subprocess

import pytest

from tests.deploy.conftest import REPO, require_tool

SCRIPT = REPO / ".ci" / "deploy-tools.sh"


def test_missing_tool_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r"deploy-tools\.sh"):
        require_tool("promtool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="promtool` not found"):
        require_tool("promtool")


def test_deploy_tools_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


def test_deploy_tools_is_a_no_op_when_installed() -> None:
    # Only where the packages are installed: elsewhere this would run apt-get from a test.
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system (no dpkg-query)")
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\n", "prometheus", "docker-compose"],
        capture_output=True,
        text=True,
        check=False,
    )
    if installed.stdout.count("install ok installed") != 2:
        pytest.skip("prometheus and docker-compose Debian packages are not both installed")
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "already installed" in result.stdout
    assert "apt-get" not in result.stdout + result.stderr
