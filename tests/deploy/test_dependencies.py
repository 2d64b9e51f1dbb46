"""The serving install is slim: research packages are extras, and every version is pinned once.

CI (`.ci/run`) and the image (`Dockerfile`) install with ``-c constraints.txt``; the service runs
without the training and evaluation extras, and a command that needs one names it.
"""

import subprocess
import sys
import textwrap
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import REPO

RESEARCH = ("onnx", "onnxscript", "matplotlib")
# The project's offline packages: the service must start and serve without importing them.
OFFLINE_PACKAGES = ("gga_lab", "gga_training", "attacks")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith("gga-serve")]
    pins = _pins()
    assert "torch" not in pins  # pinned on its own, per wheel index
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{req.name} is not pinned in constraints.txt (.ci/lock.sh)"
        assert req.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_ci_and_image_install_with_the_constraints() -> None:
    assert "-c constraints.txt -e '.[dev]'" in (REPO / ".ci" / "run").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md constraints.txt" in dockerfile
    assert 'pip install --no-cache-dir -c constraints.txt ".${EXTRAS:+[$EXTRAS]}"' in dockerfile


def test_serving_needs_no_research_package(tmp_path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert not core & {"onnx", "onnxscript", "matplotlib", "scipy"}
    # The app starts and answers both protocols with those packages impossible to import.
    script = textwrap.dedent(
        f"""
        import sys

        for name in {RESEARCH + OFFLINE_PACKAGES!r}:
            sys.modules[name] = None  # as if not installed: importing it raises
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.settings import Settings

        settings = Settings(_env_file=None, database_url="sqlite:///{tmp_path}/s.db",
                            warmup_batch_sizes=[1], torch_threads=1)
        with TestClient(create_app(settings)) as client:
            r = client.post("/v1/models/fashion-mnist-cnn/predict",
                            json={{"tensor": [[0.5] * 28] * 28}})
            assert r.status_code == 200, r.text
            body = {{"inputs": [{{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                  "data": [0.5] * 784}}]}}
            r = client.post("/v2/models/fashion-mnist-cnn/infer", json=body)
            assert r.status_code == 200, r.text
        loaded = sorted(
            m for m in sys.modules if m.split(".")[0] in {RESEARCH + OFFLINE_PACKAGES!r}
            and sys.modules[m] is not None
        )
        print("served", loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "served []" in out.stdout


def test_a_command_needing_an_extra_says_which(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import sys

        sys.modules["onnx"] = None  # as if not installed
        from gga_cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "export", "fashion-mnist-cnn", "--out", str(tmp_path / "m")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'gga-serve[train]'" in out.stderr and "Traceback" not in out.stderr
