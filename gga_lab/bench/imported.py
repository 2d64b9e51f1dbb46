"""The gradient engine on an imported model against the same network defined natively (issue 15).

The zoo's ``compact-cnn`` (the architecture the Fashion-MNIST models are served with, random
weights: timing does not depend on them) is exported as ONNX, torch.export and TorchScript,
imported with ``gga import``'s own code into a temporary repository and loaded as the service
loads it. Each engine (auto-tuned per batch size, as served) is timed against the native module's
in interleaved rounds, so load from other processes hits both alike; the ratio imported / native
is reported per format and batch size. The floor is 1.5; docs/models.md reports the figures.

    gga bench imported [--batch-sizes 1,8,32] [--repeats 20] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from detectors.autotune import time_round_robin
from detectors.engine import GradientEngine
from models.architectures import build_model
from models.imported.exporting import export_three_ways
from models.imported.importer import ImportOptions, import_model
from models.repository import ModelRepository

ARCHITECTURE = "compact-cnn"
INPUT_SHAPE = (1, 28, 28)


def report(
    sizes: Sequence[int] = (1, 8, 32), repeats: int = 20, threads: int = 1, out: Path | None = None
) -> dict[str, dict[str, dict]]:
    """Measure, print a table and write the figures as JSON to ``out``."""
    torch.set_num_threads(threads)
    results = measure(list(sizes), repeats)
    sys.stdout.write(
        f"{ARCHITECTURE}, {threads} thread(s), torch {torch.__version__}, median of {repeats}\n"
    )
    sys.stdout.write(
        f"{'format':<14}{'batch':>6}{'native ms':>11}{'imported ms':>13}{'ratio':>7}\n"
    )
    worst = 0.0
    for fmt, by_size in results.items():
        for size, r in by_size.items():
            worst = max(worst, r["ratio"])
            sys.stdout.write(
                f"{fmt:<14}{size:>6}{r['native_ms']:>11.2f}{r['imported_ms']:>13.2f}"
                f"{r['ratio']:>7.2f}  ({r['strategy']})\n"
            )
    sys.stdout.write(
        f"worst ratio {worst:.2f} (floor 1.5: {'met' if worst <= 1.5 else 'MISSED'})\n"
    )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def measure(sizes: list[int], repeats: int) -> dict[str, dict[str, dict]]:
    """Per format and batch size: native and imported ms, their ratio, the imported strategy."""
    torch.manual_seed(0)
    native = build_model(ARCHITECTURE, {})
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = export_three_ways(native, Path(tmp), INPUT_SHAPE, torchscript="trace")
        repo = Path(tmp) / "repo"
        repo.mkdir()
        engines = {"native": GradientEngine(native)}
        for fmt, path in files.items():
            import_model(path, repo, ImportOptions(name=fmt, input_shape=INPUT_SHAPE))
            engines[fmt] = GradientEngine(ModelRepository(repo).load(fmt).module)
        for engine in engines.values():
            engine.warmup(INPUT_SHAPE, sizes)
        for size in sizes:
            x = torch.rand(size, *INPUT_SHAPE, generator=torch.Generator().manual_seed(size))
            fns = {name: (lambda e=engine, x=x: e(x)) for name, engine in engines.items()}
            seconds = time_round_robin(fns, torch.device("cpu"), repeats)
            for fmt in files:
                results.setdefault(fmt, {})[str(size)] = {
                    "native_ms": round(seconds["native"] * 1e3, 3),
                    "imported_ms": round(seconds[fmt] * 1e3, 3),
                    "ratio": round(seconds[fmt] / seconds["native"], 3),
                    "strategy": engines[fmt].strategy_for(size),
                }
    return results
