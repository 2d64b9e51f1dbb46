"""``gga bench photo-model``: a 224x224 ResNet-18 taken along a user's path, memory and start-up
measured at each step.

The path a user with a photo classifier takes: export the network (``torch.export``, ``.pt2``),
``gga import`` it, ``gga fit`` its trust score on a folder of labelled JPEGs, ``gga serve`` it,
send it phone photos from 32 clients, restart the server. Each step runs as its own process, as
a user would run it, and the benchmark records its wall time and its peak resident memory
(``os.wait4``'s ``ru_maxrss`` for a command, ``VmHWM`` for the server). No weights are
downloaded: the network is built in code (``models.resnet_imagenet``) with random convolutions
and a last layer fitted as a linear probe on the same images, so that ``gga fit`` finds the
correctly classified images it needs. Cost and memory do not depend on the weights.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from gga_lab.photos import phone_jpeg
from models.architectures import build_model
from models.data import load_dataset

NAME = "photo-resnet18"
SIDE = 224


@dataclass
class Step:
    """One command of the path: what ran, how long, how much memory at its peak."""

    command: str
    seconds: float
    peak_rss_gib: float
    returncode: int


@dataclass
class PhotoModelReport:
    images: int
    probe_accuracy: float
    steps: dict[str, Step] = field(default_factory=dict)
    serve: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"{self.images} labelled JPEGs; linear-probe training accuracy "
            f"{100 * self.probe_accuracy:.1f}%"
        ]
        for name, s in self.steps.items():
            out.append(
                f"{name:<8} {s.seconds:8.1f} s  peak {s.peak_rss_gib:5.2f} GiB  "
                f"(exit {s.returncode})  {s.command}"
            )
        out += [f"serve    {k}: {v:.2f}" for k, v in self.serve.items()]
        return out


def photo_folder(data_dir: Path | None, out: Path, n: int, seed: int) -> tuple[Path, list[str]]:
    """``n`` CIFAR-10 training images, class-balanced, upscaled to 256 and saved as JPEGs in
    ``out/<class>/``: the folder ``gga fit --data`` reads."""
    data = load_dataset("cifar10", "train", data_dir=data_dir, limit=n, seed=seed)
    classes = list(data.class_names)
    for i, (x, y) in enumerate(zip(data.float(), data.y, strict=True)):
        pixels = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        photo = Image.fromarray(pixels).resize((256, 256), Image.Resampling.BICUBIC)
        folder = out / classes[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        photo.save(folder / f"{i:04d}.jpg", quality=90)
    return out, classes


def _read_folder(folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).glob("*.jpg")):
            with Image.open(path) as im:
                crop = im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            xs.append(torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def probe_model(folder: Path, classes: list[str], seed: int) -> tuple[nn.Module, float]:
    """A ResNet-18 with random convolutions and a last layer fitted to the images (L-BFGS)."""
    torch.manual_seed(seed)
    model = build_model("resnet-imagenet", {"num_classes": len(classes)})
    x, y = _read_folder(folder, classes)
    with torch.no_grad():
        features = torch.cat([model.embed(chunk) for chunk in x.split(16)])
    mean, std = features.mean(0), features.std(0) + 1e-6
    z = (features - mean) / std
    probe = nn.Linear(z.shape[1], len(classes))
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=200)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(probe(z), y) + 1e-3 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():  # fold the standardisation into the model's own last layer
        model.fc.weight.copy_(probe.weight / std)
        model.fc.bias.copy_(probe.bias - (probe.weight / std) @ mean)
        accuracy = float((model.fc(features).argmax(1) == y).float().mean())
    return model.eval(), accuracy


def _run(argv: list[str], env: dict[str, str], log: Path) -> Step:
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    return Step(" ".join(argv[2:]), seconds, usage.ru_maxrss / 1024**2, code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _until_ready(url: str, process: subprocess.Popen, timeout_s: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"gga serve exited with {process.returncode} before ready")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"not ready within {timeout_s} s")


def _post_photo(url: str, photo: bytes) -> int:
    boundary = "gga-bench-photo"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/v1/models/{NAME}/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _load(url: str, photo: bytes, clients: int, seconds: float) -> Counter:
    statuses: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < stop_at:
            status = _post_photo(url, photo)
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def _serve(
    argv: list[str], env: dict[str, str], log: Path, work: Callable[[str, int], None] | None
) -> tuple[float, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("a") as out:
        process = subprocess.Popen([*argv, "--port", str(port)], stdout=out, stderr=out, env=env)
        try:
            ready_s = _until_ready(url, process, timeout_s=900)
            if work is not None:
                work(url, process.pid)
            return ready_s, _peak_gib(process.pid)
        finally:
            process.terminate()
            process.wait(60)


def run_photo_model(
    data_dir: Path | None,
    *,
    images: int = 300,
    clients: int = 32,
    load_seconds: float = 60.0,
    fit_args: tuple[str, ...] = (),
    seed: int = 0,
    keep: Path | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> PhotoModelReport:
    """Take the photo model along the user's path; see the module docstring."""
    work = Path(tempfile.mkdtemp(prefix="gga-photo-")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    gga = [sys.executable, "-m", "gga_cli"]
    env = {**os.environ, "GGA_TUNING_CACHE_DIR": str(work / "tuning-cache"), "GGA_RATE_LIMIT": "0"}
    progress(f"working in {work}")
    folder, classes = photo_folder(data_dir, work / "photos", images, seed)
    model, accuracy = probe_model(folder, classes, seed)
    report = PhotoModelReport(images=images, probe_accuracy=accuracy)
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.rand(2, 3, SIDE, SIDE)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(work / "model.pt2"))
    (work / "labels.txt").write_text("\n".join(classes) + "\n")
    repo = work / "repo"
    repo.mkdir(exist_ok=True)
    steps = {
        "import": [
            *gga,
            "import",
            str(work / "model.pt2"),
            "--name",
            NAME,
            "--labels",
            str(work / "labels.txt"),
            "--resize",
            "center-crop",
            "--force",
            "--repo",
            str(repo),
        ],
        "fit": [*gga, "fit", NAME, "--data", str(folder), "--repo", str(repo), *fit_args],
    }
    for name, argv in steps.items():
        progress(f"{name}: {' '.join(argv[2:])}")
        report.steps[name] = _run(argv, env, work / f"{name}.log")
        progress("  " + report.lines()[-1])
        if report.steps[name].returncode != 0:
            progress(f"  failed: see {work / f'{name}.log'}")
            return report
    serve = [
        *gga,
        "serve",
        "--repo",
        str(repo),
        "--models",
        NAME,
        "--database-url",
        f"sqlite:///{work / 'gga.db'}",
    ]
    photo = phone_jpeg()
    statuses: Counter = Counter()

    def under_load(url: str, pid: int) -> None:
        statuses.update(_load(url, photo, clients, load_seconds))

    progress(f"serve: first start, then {clients} clients for {load_seconds:.0f} s")
    first_ready, peak = _serve(serve, env, work / "serve.log", under_load)
    progress("serve: restart with the tuning cache")
    second_ready, _ = _serve(serve, env, work / "serve.log", None)
    report.serve = {
        "ready_first_start_s": first_ready,
        "ready_restart_s": second_ready,
        "peak_rss_under_load_gib": peak,
        "answered_200": float(statuses.get(200, 0)),
        "answered_other": float(sum(v for k, v in statuses.items() if k != 200)),
    }
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def write_report(report: PhotoModelReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=1) + "\n")
