"""Builds a small but real model folder (card, weights, fitted detector) for the service tests.

The zoo's trained models may not exist when the tests run, and loading them costs seconds; a
compact CNN with narrow layers, trained for a few steps on real Fashion-MNIST images and with a
multi-view trust detector fitted by ``gga fit``'s own code (small sizes), exercises every code
path of the service.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from gga_lab.fit import FitConfig, fit_trust_scorer
from models.architectures import build_model
from models.card import ModelCard, Preprocessing
from models.data import load_dataset
from models.repository import save_model_folder

CONFIG = {"widths": [4, 8], "hidden": 16, "dropout": 0.0}


COLOUR_CONFIG = {"depth": 8, "widths": [4, 8, 16]}


def make_model_folder(root: Path, data_dir: Path, name: str = "fashion-mnist-cnn") -> Path:
    """Write ``root/name`` with a briefly trained compact CNN and its fitted detector.

    Args:
        root: Repository folder.
        data_dir: The shared data sets.
        name: Model name.

    Returns:
        The model folder.
    """
    return _make_folder(root, data_dir, name, "fashion-mnist", "compact-cnn", CONFIG)


def make_colour_model_folder(root: Path, data_dir: Path, name: str = "cifar10-tiny") -> Path:
    """Write ``root/name``: a narrow ResNet-8 briefly trained on real CIFAR-10 colour images,
    whose card asks for RGB inputs resized by centre crop, with its fitted detector."""
    return _make_folder(
        root,
        data_dir,
        name,
        "cifar10",
        "resnet",
        COLOUR_CONFIG,
        Preprocessing(color_mode="RGB", resize=True, resize_mode="center-crop"),
    )


def _make_folder(
    root: Path,
    data_dir: Path,
    name: str,
    dataset: str,
    architecture: str,
    config: dict,
    preprocessing: Preprocessing | None = None,
) -> Path:
    train = load_dataset(dataset, "train", data_dir=data_dir, limit=2048)
    torch.manual_seed(0)
    model = build_model(architecture, config)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all, y_all = train.float(), train.y
    for step in range(60):  # ~70% accuracy: enough for meaningful trust scores
        idx = torch.randint(0, len(x_all), (64,), generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    card = ModelCard(
        name=name,
        version="0.0.1-test",
        architecture=architecture,
        config=config,
        input_shape=train.shape,
        class_names=tuple(train.class_names),
        dataset=dataset,
        preprocessing=preprocessing or Preprocessing(),
    )
    folder = root / name
    card = save_model_folder(folder, card, model)
    for p in model.parameters():
        p.requires_grad_(False)
    # The model trained on random draws of all 2,048 images: none is held out, so every part of
    # the fit draws from them (fine for a fixture; gga fit calibrates on held-out images).
    config = FitConfig(
        n_fit=600, n_view_cal=150, n_tune=150, n_cal=150, rescale="on", pgd_steps=5, bins=10
    )
    fit_trust_scorer(
        model,
        x_all,
        y_all,
        model_name=name,
        weights_sha256=card.weights_sha256,
        config=config,
        dataset=dataset,
        progress=False,
    ).save(folder)
    return folder


class LiveServer:
    """``gga serve`` in a subprocess on a free loopback port, for tests that need real HTTP.

    Per-caller limits are off (the overload tests drive many clients from one address); a
    setting given as None is left unset, so the server takes its default.

    Args:
        repo: Model repository.
        database_url: The store.
        **env: Extra ``GGA_*`` settings (as strings, or None for the server's default).
    """

    def __init__(self, repo: Path, database_url: str, workdir: Path, **env: str | None) -> None:
        self.repo = repo
        self.database_url = database_url
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    def start(self, timeout_s: float = 180.0) -> "LiveServer":
        env = {
            **os.environ,
            "GGA_REPO": str(self.repo),
            "GGA_DATABASE_URL": self.database_url,
            "GGA_PORT": str(self.port),
            "GGA_HOST": "127.0.0.1",
            "GGA_WARMUP_BATCH_SIZES": "1,8",
            "GGA_MAX_BATCH_SIZE": "8",
            "GGA_QUEUE_SIZE": "16",
            "GGA_RATE_LIMIT": "0",
            "GGA_CALLER_CONCURRENCY": "0",
            # The default background tuning, but with a cache of this server's own.
            "GGA_TUNING_CACHE_DIR": str(self.workdir / "tuning-cache"),
            "OMP_NUM_THREADS": "1",  # two shared cores: threads would only fight
            "GGA_TORCH_THREADS": "1",
            **self.env,
        }
        env = {name: value for name, value in env.items() if value is not None}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gga_cli", "serve"],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"server not ready in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
