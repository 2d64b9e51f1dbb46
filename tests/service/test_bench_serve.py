"""``gga bench serve`` against a real server on loopback: a short run, every number filled in."""

import io
import json
import os
import subprocess
import sys

import pytest

from gga_lab.bench.serve import floors, run_benchmark, split_cpus


def test_split_cpus_gives_the_clients_a_core_of_their_own():
    server, clients = split_cpus(pin=True)
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        assert (server, clients) == (None, None)
    else:
        assert server and clients and not server & clients
        assert server | clients == available and len(clients) == 1
    assert split_cpus(pin=False) == (None, None)


def test_short_run_measures_every_level_without_errors(model_repo, shared_data_dir):
    results = run_benchmark(
        model="fashion-mnist-cnn",
        repo=str(model_repo),
        data_dir=str(shared_data_dir),
        levels=(1, 4),
        max_requests=24,
        max_seconds=2.0,
    )
    assert [r.clients for r in results] == [1, 4]
    for r in results:
        assert r.requests > 0 and r.errors == 0 and r.refused == 0
        assert r.throughput > 0 and 0 < r.p50_ms <= r.p95_ms <= r.p99_ms
        assert r.mean_batch >= 1.0 and r.offline_throughput > 0
    assert floors(results) == {"no_errors": True}  # no 1-vs-32 levels here: no ratio floors


@pytest.mark.timeout(300)
def test_cli_writes_json_with_its_setup(model_repo, shared_data_dir, tmp_path):
    out = tmp_path / "serve.json"
    cmd = [sys.executable, "-m", "gga_cli", "bench", "serve", "--repo", str(model_repo)]
    cmd += ["--data-dir", str(shared_data_dir), "--clients", "2", "--requests", "8"]
    cmd += ["--seconds", "1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["setup"]["model"] == "fashion-mnist-cnn"
    assert report["levels"][0]["clients"] == 2 and report["levels"][0]["requests"] > 0
    assert "served/offline" in done.stdout


def test_colour_models_are_sent_one_jpeg_per_request(colour_repo, shared_data_dir, cifar_test):
    from PIL import Image

    from gga_lab.bench.serve import upload_files

    x = cifar_test.float()[:4]
    uploads = upload_files(x, "auto")
    assert [u[2] for u in uploads] == ["image/jpeg"] * 4
    assert Image.open(io.BytesIO(uploads[0][1])).format == "JPEG"
    assert upload_files(x[:, :1], "auto")[0][2] == "image/png"  # grey: PNG
    with pytest.raises(ValueError, match="unknown image format"):
        upload_files(x, "gif")
    results = run_benchmark(
        model="cifar10-tiny",
        repo=str(colour_repo),
        data_dir=str(shared_data_dir),
        levels=(2,),
        max_requests=12,
        max_seconds=2.0,
    )
    assert results[0].requests > 0 and results[0].errors == 0
