"""``gga bench serve``: throughput and latency of the real server against the offline engine.

Starts ``gga serve`` in a subprocess on a free loopback port (a throw-away SQLite store), drives
it with 1, 8 and 32 concurrent httpx async clients posting real Fashion-MNIST test images, each
level bounded by a request count and a time limit, and reads the mean micro-batch size from the
server's own metrics. The offline pipeline (engine + detector, no HTTP, no store) is then timed
in-process at that batch size, so the two numbers compare like with like.

On a machine with two or more cores the load generator is pinned to the last core and the server
(and then the offline run) to the others, as if the clients ran on another machine: on a small
box an unpinned httpx load generator takes a large share of the cores the server is measured on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

from models.errors import GGAUserError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI starts fast
    from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass
class LevelResult:
    """One concurrency level.

    Attributes:
        clients: Concurrent clients.
        requests: Requests answered 200.
        refused: Requests answered 503 (queue full).
        errors: Any other status or transport error.
        seconds: Wall time of the level.
        throughput: Images per second (one image per request).
        p50_ms, p95_ms, p99_ms: Latency percentiles of the 200s.
        mean_batch: Mean micro-batch size the server's batcher reached.
        offline_throughput: Offline pipeline images per second at ``mean_batch``.
    """

    clients: int
    requests: int
    refused: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    offline_throughput: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


class ServerProcess:
    """``gga serve`` in a subprocess, bound to loopback only.

    Args:
        model: Model to serve.
        repo: Model repository (None: the shipped one).
        workdir: Folder for the store and the log.
        env: Extra ``GGA_*`` settings.
        cpus: Pin the server process to these CPUs (None: no pinning).
    """

    def __init__(
        self,
        model: str,
        repo: str | None,
        workdir: Path,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.ready_timeout_s = ready_timeout_s
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.env = {
            **os.environ,
            "GGA_HOST": "127.0.0.1",
            "GGA_PORT": str(self.port),
            "GGA_MODELS": model,
            "GGA_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "GGA_API_KEYS": "",
            "GGA_API_KEYS_REQUIRED": "false",
            "GGA_RATE_LIMIT": "0",
            # Measure a fully tuned server: every bucket measured before ready, none cached.
            "GGA_BACKGROUND_TUNING": "false",
            "GGA_TUNING_CACHE_DIR": "",
            **({"GGA_REPO": repo} if repo else {}),
            **(env or {}),
        }
        self.workdir = workdir
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gga_cli", "serve"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # In the child before exec, so every thread torch starts inherits the mask.
                preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text()[-2000:]
                raise GGAUserError(f"the server did not start:\n{tail}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.__exit__()
        # The log sits in a temporary folder that is gone once the benchmark exits: quote it.
        tail = self.log_path.read_text()[-2000:]
        raise GGAUserError(
            f"the server was not ready within {self.ready_timeout_s:.0f} s (warm-up tunes the "
            f"engine per batch size; raise --ready-timeout on a busy machine):\n{tail}"
        )

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def _drive(
    url: str,
    model: str,
    files: list[tuple[str, bytes, str]],
    clients: int,
    max_requests: int,
    max_seconds: float,
) -> tuple[list[float], int, int, float]:
    latencies: list[float] = []
    refused = errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    path = f"/v1/models/{model}/predict"
    start = time.perf_counter()
    stop_at = start + max_seconds

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, refused, errors
            while sent < max_requests and time.perf_counter() < stop_at:
                upload = files[sent % len(files)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, files={"file": upload})
                except httpx.HTTPError:
                    errors += 1
                    continue
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                elif r.status_code == 503:
                    refused += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 10)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, refused, errors, time.perf_counter() - start


def offline_throughput(
    model: str, repo: str | None, x: np.ndarray, batch_size: int, seconds: float = 5.0
) -> float:
    """Images per second of the pipeline alone at ``batch_size`` (after one warm-up call).

    Args:
        model: Model name.
        repo: Model repository (None: the shipped one).
        x: Float images (N, C, H, W) in [0, 1].
        batch_size: Batch size to time.
        seconds: Time budget.
    """
    import torch

    from detectors.pipeline import serving_pipeline
    from models.repository import ModelRepository

    loaded = ModelRepository(repo).load(model)
    pipeline = serving_pipeline(loaded.path, loaded.module, loaded.card)
    batch_size = max(1, min(batch_size, len(x)))
    pipeline.warmup(loaded.card.input_shape, (batch_size,))
    batch = torch.from_numpy(x[:batch_size])
    pipeline(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        pipeline(batch)
        done += batch_size
    return done / (time.perf_counter() - start)


def upload_files(x: Tensor, image_format: str) -> list[tuple[str, bytes, str]]:
    """One multipart upload ``(file name, bytes, media type)`` per image of ``x`` (N, C, H, W).

    Raises:
        ValueError: an unknown ``image_format``.
    """
    from models.imaging import encode_jpeg, encode_png

    if image_format == "auto":
        image_format = "jpeg" if x.shape[1] == 3 else "png"
    if image_format == "jpeg":
        return [(f"{i}.jpg", encode_jpeg(img), "image/jpeg") for i, img in enumerate(x)]
    if image_format == "png":
        return [(f"{i}.png", encode_png(img), "image/png") for i, img in enumerate(x)]
    raise ValueError(f"unknown image format {image_format!r}; use auto, png or jpeg")


def split_cpus(pin: bool = True) -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load-generator CPUs): the last available core for the clients, the rest
    for the server; ``(None, None)`` when not pinning or with fewer than two cores."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return set(available[:-1]), {available[-1]}


def run_benchmark(
    model: str = "fashion-mnist-cnn",
    repo: str | None = None,
    data_dir: str | None = None,
    levels: tuple[int, ...] = (1, 8, 32),
    max_requests: int = 2000,
    max_seconds: float = 20.0,
    server_env: dict[str, str] | None = None,
    threads: int | None = None,
    pin: bool = True,
    image_format: str = "auto",
    ready_timeout_s: float = 300.0,
) -> list[LevelResult]:
    """Measure the served model at each concurrency level and the offline pipeline beside it.

    Args:
        model: Model to serve (it needs a ``detector.json``).
        repo: Model repository (None: the shipped one).
        data_dir: Data sets folder (None: ``$GGA_DATA_DIR``).
        levels: Concurrent client counts.
        max_requests: Most requests per level.
        max_seconds: Longest per level.
        server_env: Extra ``GGA_*`` settings for the server.
        threads: torch threads of both the server and the offline run (None: one per server
            CPU when pinned, else torch's default). The same count on both sides keeps the
            comparison fair.
        pin: pin the load generator to the last core and the server and offline run to the
            others (see :func:`split_cpus`).
        image_format: ``"png"``, ``"jpeg"`` (quality 90), or ``"auto"``: JPEG for a colour
            model (what a phone sends), PNG for a grey one. One image per request.
        ready_timeout_s: how long the server may take to load and warm up.

    Returns:
        One :class:`LevelResult` per level.
    """
    import torch

    from models.data import dataset_names, load_dataset
    from models.repository import ModelRepository

    # Every request is logged by httpx at INFO; thousands of lines would bury the results.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    server_env = dict(server_env or {})
    server_cpus, client_cpus = split_cpus(pin)
    if threads is None and server_cpus:
        threads = len(server_cpus)
    if threads is not None:
        server_env["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    card = ModelRepository(repo).card(model)
    if card.dataset in dataset_names():
        x = load_dataset(card.dataset, "test", data_dir=data_dir, limit=256).float()
    else:
        # A user's model (``gga import``) names no data set: its cost does not depend on what
        # the pictures show, so random ones of its input size stand in.
        x = torch.rand(32, *card.input_shape, generator=torch.Generator().manual_seed(0))
    files = upload_files(x, image_format)
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="gga-bench-") as tmp,
        ServerProcess(
            model, repo, Path(tmp), server_env, cpus=server_cpus, ready_timeout_s=ready_timeout_s
        ) as server,
        _pinned(client_cpus),
    ):
        for clients in levels:
            before = httpx.get(server.url + "/metrics").text
            latencies, refused, errors, seconds = asyncio.run(
                _drive(server.url, model, files, clients, max_requests, max_seconds)
            )
            after = httpx.get(server.url + "/metrics").text
            batches = _metric(after, "gga_batch_size_count") - _metric(
                before, "gga_batch_size_count"
            )
            images = _metric(after, "gga_batch_size_sum") - _metric(before, "gga_batch_size_sum")
            ms = np.asarray(latencies or [float("nan")]) * 1000
            results.append(
                LevelResult(
                    clients=clients,
                    requests=len(latencies),
                    refused=refused,
                    errors=errors,
                    seconds=seconds,
                    throughput=len(latencies) / seconds,
                    p50_ms=float(np.percentile(ms, 50)),
                    p95_ms=float(np.percentile(ms, 95)),
                    p99_ms=float(np.percentile(ms, 99)),
                    mean_batch=images / batches if batches else 0.0,
                )
            )
            logger.info("clients=%d: %s", clients, results[-1])
    # Offline after the server is gone, so the two never compete for the CPU.
    x_np = x.numpy()
    with _pinned(server_cpus):  # the cores the server had
        for result in results:
            result.offline_throughput = offline_throughput(
                model, repo, x_np, round(result.mean_batch) or 1, seconds=min(5.0, max_seconds)
            )
    return results


@contextlib.contextmanager
def _pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run this process on ``cpus`` inside the block (no change when None)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def floors(results: list[LevelResult]) -> dict[str, object]:
    """The issue's floors, checked on ``results`` (needs levels 1 and 32)."""
    by = {r.clients: r for r in results}
    out: dict[str, object] = {}
    if 1 in by and 32 in by:
        speedup = by[32].throughput / by[1].throughput if by[1].throughput else 0.0
        ratio = by[32].throughput / by[32].offline_throughput if by[32].offline_throughput else 0.0
        out["speedup_32_vs_1"] = round(speedup, 2)
        out["speedup_floor_3x_met"] = speedup >= 3.0
        out["served_vs_offline_at_32"] = round(ratio, 3)
        out["offline_floor_70pct_met"] = ratio >= 0.7
    out["no_errors"] = all(r.errors == 0 for r in results)
    return out


def format_table(results: list[LevelResult]) -> str:
    head = (
        f"{'clients':>7} {'req':>6} {'503':>5} {'err':>4} {'img/s':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'offline img/s':>14} {'served/offline':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ratio = r.throughput / r.offline_throughput if r.offline_throughput else float("nan")
        lines.append(
            f"{r.clients:>7} {r.requests:>6} {r.refused:>5} {r.errors:>4} {r.throughput:>8.1f} "
            f"{r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} {r.mean_batch:>6.1f} "
            f"{r.offline_throughput:>14.1f} {ratio:>14.2f}"
        )
    return "\n".join(lines)


def to_json(
    results: list[LevelResult], setup: dict[str, object] | None = None
) -> dict[str, object]:
    return {
        "setup": setup or {},
        "levels": [asdict(r) for r in results],
        "floors": floors(results),
    }
