"""How much a served prediction depends on the micro-batch it was computed in (issue 17, point 14).

For each zoo model the real pipeline (gradient engine with its auto-tuned strategies, fitted trust
scorer) scores the same test images alone (batch 1, as a request at low traffic) and inside
batches of 8, 32 and 64 (as under load), and reports the largest difference of every served
number: probabilities, CSM entries, the ten features, the trust score, and how many labels and
flags differ. A second measurement pads every batch to one fixed size (the image alone, then among
other images at another position) to see whether fixed-size batches would make results
batch-invariant.

    gga bench batch-invariance --data-dir ../shared/data [--n 128] [--json FILE]

docs/detectors.md reports its figures; tests/service/test_batch_invariance.py checks the bound
on a smaller sample.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from detectors.pipeline import GGAPipeline, PipelineOutput, load_pipeline
from models.data import load_dataset
from models.repository import ModelRepository

DEFAULT_MODELS = (
    "fashion-mnist-cnn",
    "fashion-mnist-cnn-pgd",
    "mnist-lenet-low",
    "mnist-lenet-high",
)

FIELDS = ("probabilities", "csm", "features", "trust")


def pipeline_of(name: str) -> tuple[GGAPipeline, str]:
    loaded = ModelRepository().load(name)
    return load_pipeline(
        loaded.path, loaded.module, loaded.card.weights_sha256
    ), loaded.card.dataset


def score_in_batches(pipeline: GGAPipeline, x: torch.Tensor, batch: int) -> PipelineOutput:
    """The pipeline over ``x`` in consecutive batches of ``batch`` images, concatenated."""
    return PipelineOutput.concat([pipeline(x[i : i + batch]) for i in range(0, len(x), batch)])


def differences(a: PipelineOutput, b: PipelineOutput) -> dict[str, float]:
    """Largest absolute difference of each served number, and label and flag disagreements."""
    out = {f: float(np.abs(getattr(a, f) - getattr(b, f)).max()) for f in FIELDS}
    out["labels_differ"] = int((a.labels != b.labels).sum())
    out["flags_differ"] = int((a.flagged != b.flagged).sum())
    return out


def padded_alone_vs_among(pipeline: GGAPipeline, x: torch.Tensor, size: int) -> dict[str, float]:
    """Each image padded alone to ``size`` (zeros after it) against the same image placed last
    among ``size - 1`` other real images: the same batch size, other companions and position."""
    alone, among = [], []
    for i in range(len(x)):
        pad = torch.zeros((size - 1, *x.shape[1:]))
        a = pipeline(torch.cat([x[i : i + 1], pad]))
        others = torch.cat([x[:i], x[i + 1 :]])[: size - 1]
        b = pipeline(torch.cat([others, x[i : i + 1]]))
        alone.append((a.trust[0], a.csm[0], a.features[0], a.probabilities[0]))
        among.append((b.trust[-1], b.csm[-1], b.features[-1], b.probabilities[-1]))
    names = ("trust", "csm", "features", "probabilities")
    return {
        name: float(max(np.abs(np.asarray(p[k]) - np.asarray(q[k])).max()
                        for p, q in zip(alone, among, strict=True)))
        for k, name in enumerate(names)
    }  # fmt: skip


def measure(name: str, data_dir: str | None, n: int, sizes: tuple[int, ...]) -> dict[str, object]:
    pipeline, dataset = pipeline_of(name)
    x = load_dataset(dataset, "test", data_dir=data_dir, limit=n).float()
    pipeline.warmup(tuple(x.shape[1:]), (1, *sizes))
    alone = score_in_batches(pipeline, x, 1)
    result: dict[str, object] = {"model": name, "images": n, "alpha": pipeline.alpha}
    for size in sizes:
        result[f"batch_{size}_vs_1"] = differences(alone, score_in_batches(pipeline, x, size))
    result["fixed_size_8"] = padded_alone_vs_among(pipeline, x[: min(n, 32)], 8)
    return result


def report(
    models: Sequence[str] = DEFAULT_MODELS,
    data_dir: str | None = None,
    n: int = 128,
    sizes: Sequence[int] = (8, 32, 64),
    threads: int = 1,
    out: Path | None = None,
) -> list[dict]:
    """Measure every model, print the results as JSON and write them to ``out``."""
    torch.set_num_threads(threads)
    results = [measure(m, data_dir, n, tuple(sizes)) for m in models]
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return results
