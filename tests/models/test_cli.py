"""The model commands of the ``gga`` CLI, run as a user runs them (a real subprocess)."""

import json
import subprocess
import sys

import pytest

from models.repository import ModelRepository


def gga(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_models_lists_the_shipped_zoo():
    out = gga("models")
    assert out.returncode == 0, out.stderr
    for name in ModelRepository().names():
        assert name in out.stdout
    listed = json.loads(gga("models", "--json").stdout)
    assert {c["name"] for c in listed} == set(ModelRepository().names())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "--repo", "/nonexistent/repo"], "does not exist"),
        (["predict", "no-such-model", "x.png"], "no model 'no-such-model'"),
        (["train", "/nonexistent/recipe.toml"], "not found"),
        (["export", "no-such-model"], "no model"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    out = gga(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
