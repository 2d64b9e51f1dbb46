"""``gga lab`` and the lab's ``gga bench`` commands, run as a user runs them (a real subprocess)."""

import json
import shutil
from pathlib import Path

from detectors.trust import TrustScorer
from models.repository import ModelRepository
from tests.helpers.cli import gga

REPO = Path(__file__).resolve().parents[2]


def test_results_regenerates_the_committed_page(tmp_path: Path) -> None:
    # The page's generated parts come from docs/results/<model>/: rebuilt from those reports, the
    # committed page must not change (a report edited without regenerating the page fails here).
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    out = gga("lab", "results", "--docs", str(docs), cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (docs / "results.md").read_text() == (REPO / "docs" / "results.md").read_text()


def test_results_outside_the_repository_says_where_it_looked(tmp_path: Path) -> None:
    out = gga("lab", "results", cwd=tmp_path)
    assert out.returncode == 2
    assert "docs/results.md not found" in out.stderr and "Traceback" not in out.stderr


def test_bench_views_times_every_fused_view(tmp_path: Path) -> None:
    name = "mnist-lenet-low"
    out = gga(
        "bench", "views", name, "--batch", "4", "--repeats", "1", "--json", str(tmp_path / "v")
    )
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads((tmp_path / "v").read_text())
    repo = ModelRepository()
    scorer = TrustScorer.load(repo.path(name), repo.load(name).card.weights_sha256, name)
    assert list(figures["views"]) == list(scorer.view_names)
    assert all(v > 0 for v in figures["views"].values())
    assert figures["pipeline"] > 0 and figures["engine"] > 0 and figures["gga_pass"] > 0
    assert f"{name}, batch 4" in out.stdout


def test_bench_option_errors_are_one_line() -> None:
    out = gga("bench", "imported", "--batch-sizes", "0,8")
    assert out.returncode == 2
    assert "--batch-sizes must be positive integers" in out.stderr and "Traceback" not in out.stderr
