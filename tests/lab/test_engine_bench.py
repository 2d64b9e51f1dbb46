"""``gga bench engine`` and its library: a tiny real run, its JSON, the floor summary."""

import json

import pytest
import torch

from detectors.engine import GradientEngine
from gga_cli import main
from gga_lab.bench.engine import BenchCase, bench_case, reference_loop, summarize_floors
from models.repository import ModelRepository
from tests.detectors import reference_gga
from tests.helpers.models import TinyCNN, seeded


@pytest.fixture(autouse=True)
def _one_thread():
    # One intra-op thread on the shared 2-core CI box; the CLI sets its own and we restore.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)  # the CLI sets the thread count it is given


def test_the_bench_reference_loop_computes_the_reference_csm():
    model = seeded(TinyCNN, seed=1, in_channels=3, num_classes=6, side=8)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = reference_gga.cosine_similarity_maps(model, x)
    torch.testing.assert_close(reference_loop(model, x), expected)
    torch.testing.assert_close(GradientEngine(model)(x).csm, expected, rtol=1e-5, atol=1e-5)


def test_bench_case_rows_ratios_and_skips():
    case = BenchCase("tiny", seeded(TinyCNN, seed=3, num_classes=4, side=8), (1, 8, 8), 4)
    records = bench_case(case, [1, 2], repeats=1, device=torch.device("cpu"), budget_s=10.0)
    names = {r.strategy for r in records if r.batch == 2}
    assert {"forward", "limit", "reference", "reference-frozen", "auto"} | {
        "batched", "vmap", "loop", "replicate"
    } <= names  # fmt: skip
    for r in records:
        assert r.ms_per_image > 0 and r.images_per_s == pytest.approx(1e3 / r.ms_per_image)
        assert r.ratio_to_limit > 0
    ref = next(r for r in records if r.strategy == "reference" and r.batch == 1)
    assert ref.ratio_to_ref == 1.0
    auto = next(r for r in records if r.strategy == "auto" and r.batch == 1)
    assert auto.note.startswith("chose ")
    assert auto.ratio_to_ref == pytest.approx(auto.ms_per_image / ref.ms_per_image)

    skipped = bench_case(case, [1], repeats=1, device=torch.device("cpu"), budget_s=0.0)
    assert all(r.ms_per_image is None for r in skipped if r.strategy not in ("forward", "limit"))
    assert any("skipped" in r.note for r in skipped)
    lines = summarize_floors(records)
    assert any("batch 1" in line and "reference" in line for line in lines)


def test_gga_bench_engine_writes_json_and_a_table(tmp_path, capsys):
    if "mnist-lenet-low" not in ModelRepository().names():
        pytest.skip("zoo model mnist-lenet-low not trained yet")
    out = tmp_path / "bench.json"
    argv = ["bench", "engine", "--model", "mnist-lenet-low", "--no-resnet", "--threads", "1",
            "--batch-sizes", "1,2", "--repeats", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 threads" in printed and "mnist-lenet-low" in printed and "/limit" in printed
    data = json.loads(out.read_text())
    assert data["threads"] == 1 and data["batch_sizes"] == [1, 2]
    keys = {"model", "classes", "batch", "strategy", "ms_per_image", "images_per_s",
            "ratio_to_ref", "ratio_to_limit", "ratio_to_forward"}  # fmt: skip
    assert all(keys <= set(r) for r in data["records"])
    assert {r["strategy"] for r in data["records"]} >= {"reference", "limit", "auto", "batched"}
    # The zoo model ships its detector: the served pipeline is timed against its own GGA pass.
    passes = {r["batch"]: r for r in data["records"] if r["strategy"] == "trust gga pass"}
    for r in (r for r in data["records"] if r["strategy"] == "trust score"):
        ratio = r["ms_per_image"] / passes[r["batch"]]["ms_per_image"]
        assert r["note"].startswith(f"{ratio:.3f}x its GGA pass alone; views ")
    assert len(passes) == 2


@pytest.mark.parametrize("argv", [["--batch-sizes", "1,x"], ["--repeats", "0"]])
def test_bad_bench_options_are_user_errors(argv, capsys):
    assert main(["bench", "engine", "--no-resnet", *argv]) == 2
    assert "bench: error:" in capsys.readouterr().err
