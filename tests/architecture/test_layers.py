"""The layers of .importlinter hold, and the check really fails when one is broken.

The contract is the architecture's one written form (docs/architecture.md draws it): imports point
down, the service imports only the online core, and no package's modules import each other in a
cycle. Each planted violation below goes into a copy of the sources, never the checkout.
"""

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("gga_cli", "gga_lab", "gga_training", "service", "detectors", "attacks", "models")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} not found: pip install -e '.[dev]' installs import-linter")
    # PYTHONPATH first: the copy's packages shadow the editable install of the checkout.
    env = {"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_checkout_keeps_every_contract() -> None:
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """A copy of the packages' Python sources and the contract."""
    for package in PACKAGES:
        shutil.copytree(
            REPO / package,
            tmp_path / package,
            # The import graph needs the sources alone: not the weights, nor the console's files.
            ignore=shutil.ignore_patterns("__pycache__", "zoo", "static"),
        )
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


PLANTED = {
    # module that gets the import, the import, the contract it must break
    "service imports the lab": (
        "service/app.py",
        "import gga_lab.fit",
        "The service imports only the online core",
    ),
    "the online core imports an attack": (
        "detectors/engine.py",
        "import attacks.pgd",
        "Packages are layered",
    ),
    "models imports upward": ("models/card.py", "import detectors.csm", "Packages are layered"),
    "a cycle inside detectors": ("detectors/csm.py", "import detectors.engine", "No import cycles"),
}


@pytest.mark.parametrize("case", PLANTED, ids=list(PLANTED))
def test_a_planted_violation_breaks_its_contract(sources: Path, case: str) -> None:
    module, statement, contract = PLANTED[case]
    path = sources / module
    path.write_text(path.read_text() + f"\n{statement}  # planted\n")
    out = lint_imports(sources)
    assert out.returncode != 0, out.stdout[-3000:]
    broken = out.stdout.split("Broken contracts")[-1]
    assert contract in broken, out.stdout[-3000:]
    assert statement.split()[1].split(".")[0] in broken


def contract_layers() -> list[set[str]]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    rows = config["importlinter:contract:layers"]["layers"].split("\n")
    return [{p.strip() for p in row.split("|")} for row in rows if row.strip()]


def diagram_layers() -> list[set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    diagram = text.split("## Layers", 1)[1].split("```")[1]
    rows = [
        {w for w in re.findall(r"[a-z_]+", line) if w in PACKAGES} for line in diagram.split("\n")
    ]
    return [row for row in rows if row]


def test_the_documented_diagram_has_the_contracts_layers() -> None:
    assert set(PACKAGES) == set().union(*contract_layers())
    assert diagram_layers() == contract_layers()
