"""Torch threads per replica: GGA_TORCH_THREADS, else the CPUs the process may use."""

import threading
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.threads import available_cpus, cgroup_cpu_limit, configure_torch_threads
from tests.service.conftest import service_settings


def test_cgroup_quota_is_read_in_cpus(tmp_path: Path) -> None:
    v2 = tmp_path / "cpu.max"
    quota, period = tmp_path / "quota", tmp_path / "period"
    missing = tmp_path / "missing"
    v2.write_text("250000 100000\n")
    assert cgroup_cpu_limit(v2, missing, missing) == 2.5
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(v2, missing, missing) is None
    quota.write_text("150000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_limit(missing, quota, period) == 1.5
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(missing, quota, period) is None
    assert 1 <= available_cpus() <= (torch.get_num_threads() + 1024)


def test_the_service_caps_torch_threads(model_repo: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        assert configure_torch_threads(None) == available_cpus()
        settings = service_settings(model_repo, tmp_path / "t.db", warmup_batch_sizes=[1])
        settings.torch_threads = 3
        with TestClient(create_app(settings)) as client:
            assert client.get("/v2/health/ready").status_code == 200
            # The setting is process-wide: a thread started now (as the batcher's are) uses it.
            seen: list[int] = []
            worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
            worker.start()
            worker.join()
            assert seen == [3]
    finally:
        torch.set_num_threads(before)
