"""Training throughput of ResNet-20 on CIFAR-10-sized batches under each CPU setting.

Times full SGD steps (forward, backward, Nesterov update; batch 128 of 3x32x32 images, the
cifar10-resnet20 recipe's) in NCHW and channels_last memory order, eager and under
``torch.compile``, at the given thread counts. Every setting is built and warmed up first
(compilation included), then the settings take turns, a block of steps each, for several rounds,
so that a change in the machine's load hits them all alike. Reported per setting, as medians
over the rounds: images per second of wall time, and images per CPU-second of the process (what
a setting costs, which a busy machine disturbs far less than wall time). docs/training.md quotes
its output.

    gga bench train-speed [--rounds 6] [--steps 4] [--threads 1,2] [--no-compile] [--json FILE]
"""

import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from models.architectures import build_model

logger = logging.getLogger("train_speed")
BATCH = 128
TRAIN_IMAGES = 45_000


def make_step(channels_last: bool, compiled: bool) -> Callable[[], None]:
    """One SGD step of a fresh ResNet-20 on a fixed random batch, as a closure."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("resnet", {}).train().to(memory_format=fmt)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    forward = torch.compile(model) if compiled else model
    x = torch.rand(BATCH, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def report(
    rounds: int = 6,
    steps: int = 4,
    threads: Sequence[int] = (1, 2),
    compile_too: bool = True,
    out: Path | None = None,
) -> list[dict]:
    """Time every setting, log a markdown table and write the rows as JSON to ``out``."""
    logger.info("load average before: %s", " ".join(f"{v:.2f}" for v in os.getloadavg()))

    settings = {}
    for n_threads in threads:
        for channels_last in (False, True):
            for compiled in (False, True) if compile_too else (False,):
                torch.set_num_threads(n_threads)
                step = make_step(channels_last, compiled)
                start = time.perf_counter()
                for _ in range(2):
                    step()  # warm-up: compilation, oneDNN kernel choice
                key = (n_threads, "channels_last" if channels_last else "NCHW", compiled)
                logger.info("%s: warm-up %.1f s", key, time.perf_counter() - start)
                settings[key] = step

    wall: dict[tuple, list[float]] = {k: [] for k in settings}
    cpu: dict[tuple, list[float]] = {k: [] for k in settings}
    for r in range(rounds):
        order = list(settings) if r % 2 == 0 else list(reversed(settings))
        for key in order:
            torch.set_num_threads(key[0])
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            for _ in range(steps):
                settings[key]()
            wall[key].append(time.perf_counter() - t_wall)
            cpu[key].append(time.process_time() - t_cpu)
        logger.info("round %d of %d done", r + 1, rounds)

    images = steps * BATCH
    rows = []
    logger.info("| threads | memory format | compiled | img/s (wall) | img per CPU-s | epoch |")
    logger.info("|---|---|---|---|---|---|")
    for key in settings:
        rate = images / statistics.median(wall[key])
        per_cpu = images / statistics.median(cpu[key])
        minutes = TRAIN_IMAGES / rate / 60
        n_threads, fmt, compiled = key
        logger.info(
            f"| {n_threads} | {fmt} | {compiled} | {rate:.0f} | {per_cpu:.0f} | {minutes:.1f} min |"
        )
        rows.append(
            {
                "threads": n_threads,
                "memory_format": fmt,
                "compiled": compiled,
                "images_per_s": rate,
                "images_per_cpu_s": per_cpu,
                "epoch_minutes": minutes,
            }
        )
    logger.info("load average after: %s", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows
