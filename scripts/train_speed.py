"""Training throughput of ResNet-20 on CIFAR-10-sized batches under each CPU setting.

Times full SGD steps (forward, backward, Nesterov update; batch 128 of 3x32x32 images, the
cifar10-resnet20 recipe's) in plain NCHW and channels_last memory order, eager and under
``torch.compile``, at 1 and 2 intra-op threads, and prints images per second and the epoch time
of 45,000 training images. docs/training.md quotes its output; on a shared machine the load
average printed beside it says how much the figures were disturbed.

    python scripts/train_speed.py [--steps 20] [--threads 1,2] [--no-compile]
"""

import argparse
import logging
import os
import time

import torch
import torch.nn.functional as F

from models.architectures import build_model

logger = logging.getLogger("train_speed")
TRAIN_IMAGES = 45_000


def images_per_second(channels_last: bool, compiled: bool, threads: int, steps: int) -> float:
    """SGD steps per second x batch size, after warm-up steps (compilation included there)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("resnet", {}).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    forward = torch.compile(model) if compiled else model
    x = torch.rand(128, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (128,))

    def step() -> None:
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    warm = time.perf_counter()
    for _ in range(3):
        step()
    logger.info("warm-up %.1f s", time.perf_counter() - warm)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 128 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("load average before: %s", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    logger.info("| threads | memory format | compiled | img/s | epoch (45,000 images) |")
    logger.info("|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        for channels_last in (False, True):
            for compiled in (False,) if args.no_compile else (False, True):
                rate = images_per_second(channels_last, compiled, threads, args.steps)
                fmt = "channels_last" if channels_last else "NCHW"
                minutes = TRAIN_IMAGES / rate / 60
                logger.info(f"| {threads} | {fmt} | {compiled} | {rate:.0f} | {minutes:.1f} min |")
    logger.info("load average after: %s", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
