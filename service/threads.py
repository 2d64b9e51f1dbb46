"""How many CPU threads torch may use in this process: the CPUs it may run on, not the host's.

torch sizes its thread pool from the host's cores. Several replicas on one host, or one replica
in a container limited to two CPUs on a 64-core host, then run many more threads than they have
CPUs and lose most of their time to contention. A replica is given its share with
``GGA_TORCH_THREADS`` (Ray Serve passes each replica's ``num_cpus``); without it the share is
the CPUs the process may be scheduled on, capped by a cgroup CPU quota when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(
    cpu_max: Path = CGROUP_V2_CPU_MAX,
    v1_quota: Path = CGROUP_V1_QUOTA,
    v1_period: Path = CGROUP_V1_PERIOD,
) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``2.5`` = 250 ms per 100 ms), or None.

    Args:
        cpu_max: cgroup v2 ``cpu.max`` (``"max 100000"`` or ``"250000 100000"``).
        v1_quota: cgroup v1 ``cpu.cfs_quota_us`` (``-1``: no quota).
        v1_period: cgroup v1 ``cpu.cfs_period_us``.

    Returns:
        The quota, or None when there is none or it cannot be read.
    """
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1_quota.read_text())
        period_us = int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup quota (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def configure_torch_threads(threads: int | None) -> int:
    """Cap torch's intra-op threads (and its inter-op pool, while that can still be set).

    Args:
        threads: Threads to use; None means :func:`available_cpus`.

    Returns:
        The number of intra-op threads torch now uses.
    """
    import torch

    n = threads or available_cpus()
    torch.set_num_threads(n)
    # Settable once, before any inter-op work; a second app in one process keeps the first.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(max(1, min(n, 4)))
    logger.info("torch uses %d intra-op threads", torch.get_num_threads())
    return torch.get_num_threads()
