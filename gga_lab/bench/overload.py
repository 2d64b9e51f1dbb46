"""``gga bench overload``: the service at many times its capacity, and what clients see.

Each level opens N concurrent clients (keep-alive connections, as real client pools use) that
post one real Fashion-MNIST image per request for a fixed time, over v1 multipart or v2 JSON, and
never back off: a 10x overload. The clients are lean (``raw_http``: prebuilt request bytes), so
the latency they measure is the server's and not the load generator's. A separate process probes
``/v2/health/ready`` every 200 ms meanwhile (its own interpreter: the load generator's busy
event loop must not delay the probe).

The issue's floors, checked by :func:`overload_floors`: only 200, 429 and 503 answers, every 503
with ``Retry-After``, no dropped connection, p99 latency of the 200s under 2 s, and every health
probe answered within 1 s. Against ``--url`` it drives an already running deployment (Ray).
"""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from gga_lab.bench.raw_http import Connection, json_request, multipart_request

P99_FLOOR_S = 2.0
TIMEOUT_S = 60.0  # a request unanswered this long counts as dropped
HEALTH_FLOOR_S = 1.0


@dataclass
class OverloadResult:
    """One level: N clients on one protocol for a fixed time.

    Attributes:
        clients: Concurrent clients.
        protocol: ``v1`` (multipart PNG) or ``v2`` (JSON tensor).
        seconds: Wall time of the level.
        statuses: Answers by HTTP status.
        dropped: Requests that got no answer (connection reset, closed or timed out).
        refused_without_retry_after: 503 answers lacking ``Retry-After``.
        throughput: 200 answers per second.
        p50_s, p99_s: Latency of the 200s.
        health_probes: Health probes sent meanwhile.
        health_failures: Probes not answered 200.
        health_max_s: Slowest probe.
    """

    clients: int
    protocol: str
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    refused_without_retry_after: int = 0
    throughput: float = 0.0
    p50_s: float = 0.0
    p99_s: float = 0.0
    health_probes: int = 0
    health_failures: int = 0
    health_max_s: float = 0.0


def _probe_health(url: str, stop_at: float, out: multiprocessing.Queue) -> None:
    """Child process: GET /v2/health/ready every 200 ms until ``stop_at``; report latencies."""
    latencies, failures = [], 0
    with httpx.Client(timeout=10) as client:
        while time.time() < stop_at:
            t0 = time.perf_counter()
            try:
                ok = client.get(f"{url}/v2/health/ready").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            failures += not ok
            time.sleep(0.2)
    out.put((latencies, failures))


def _requests(url: str, protocol: str, path: str, x: np.ndarray) -> list[bytes]:
    """Each image's whole request, built once: the generator's work per request is one write."""
    import torch

    from models.imaging import encode_png

    host = urlsplit(url).netloc
    requests = []
    for img in x:
        if protocol == "v1":
            png = encode_png(torch.from_numpy(img))
            requests.append(multipart_request(host, path, "file", "x.png", png, "image/png"))
        else:
            body = {"inputs": [{"name": "image", "shape": [1, *img.shape], "datatype": "FP32",
                                "data": img.reshape(-1).round(4).tolist()}]}  # fmt: skip
            requests.append(json_request(host, path, body))
    return requests


async def _drive(url: str, requests: list[bytes], clients: int, seconds: float):
    """``clients`` closed-loop clients, each on its own keep-alive connection, for ``seconds``.

    A lean client (``raw_http``), so that what a client measures is the server's time: with
    httpx, 256 clients in one process spent seconds waiting for the generator itself.
    """
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    dropped = no_retry_after = 0
    stop_at = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal dropped, no_retry_after
        connection = Connection(url)
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    answer = await asyncio.wait_for(
                        connection.send(requests[i % len(requests)]), TIMEOUT_S
                    )
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    dropped += 1
                    continue
                statuses[str(answer.status)] += 1
                if answer.status == 200:
                    latencies.append(time.perf_counter() - t0)
                elif answer.status == 503 and "retry-after" not in answer.headers:
                    no_retry_after += 1
                i += clients
        finally:
            await connection.close()

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return statuses, latencies, dropped, no_retry_after


def run_level(
    url: str, model: str, x: np.ndarray, clients: int, protocol: str, seconds: float
) -> OverloadResult:
    """Drive ``url`` with ``clients`` clients for ``seconds`` and probe its health meanwhile."""
    path = f"/v1/models/{model}/predict" if protocol == "v1" else f"/v2/models/{model}/infer"
    requests = _requests(url, protocol, path, x)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    prober = ctx.Process(target=_probe_health, args=(url, time.time() + seconds, results))
    prober.start()
    start = time.perf_counter()
    statuses, latencies, dropped, no_retry_after = asyncio.run(
        _drive(url, requests, clients, seconds)
    )
    elapsed = time.perf_counter() - start
    health, failures = results.get(timeout=120)
    prober.join(30)
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return OverloadResult(
        clients=clients,
        protocol=protocol,
        seconds=round(elapsed, 2),
        statuses=dict(sorted(statuses.items())),
        dropped=dropped,
        refused_without_retry_after=no_retry_after,
        throughput=round(len(latencies) / elapsed, 1),
        p50_s=round(float(np.percentile(lat, 50)), 3),
        p99_s=round(float(np.percentile(lat, 99)), 3),
        health_probes=len(health),
        health_failures=failures,
        health_max_s=round(max(health, default=0.0), 3),
    )


def overload_floors(result: OverloadResult) -> dict[str, bool]:
    """Which of the issue's overload floors a level meets."""
    return {
        "only_200_429_503": set(result.statuses) <= {"200", "429", "503"},
        "retry_after_on_every_503": result.refused_without_retry_after == 0,
        "no_dropped_connection": result.dropped == 0,
        "p99_of_200s_under_2s": result.p99_s < P99_FLOOR_S,
        "health_within_1s": result.health_failures == 0 and result.health_max_s < HEALTH_FLOOR_S,
    }


def sample_images(data_dir: str | None, n: int = 64) -> np.ndarray:
    """The first ``n`` Fashion-MNIST test images as float pixels (N, 1, 28, 28)."""
    from models.data import load_dataset

    return load_dataset("fashion-mnist", "test", data_dir=data_dir, limit=n).float().numpy()


def report(results: list[OverloadResult], setup: dict[str, object]) -> dict[str, object]:
    """The JSON document of a run: setup, levels and the floors each level meets."""
    return {
        "setup": setup,
        "levels": [{**asdict(r), "floors": overload_floors(r)} for r in results],
    }


def format_table(results: list[OverloadResult]) -> str:
    head = "clients proto  200/s  p50 s  p99 s  statuses                      dropped  health max s"
    lines = [head]
    for r in results:
        statuses = " ".join(f"{k}:{v}" for k, v in r.statuses.items())
        lines.append(
            f"{r.clients:>7} {r.protocol:>5} {r.throughput:>6.1f} {r.p50_s:>6.3f} {r.p99_s:>6.3f}"
            f"  {statuses:<29} {r.dropped:>7}  {r.health_max_s:>12.3f}"
        )
    return "\n".join(lines)


def write_json(document: dict[str, object], path: Path) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")
