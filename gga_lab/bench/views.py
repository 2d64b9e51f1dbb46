"""What each trust view costs on top of the GGA pass, for a zoo model at one batch size.

Times the served pipeline, its engine call as served, the bare GGA pass (the same engine
without the extra forwards some views read: the squeezed copies and the block features), and
each view's scoring inside the pipeline (the same inputs the service computes), with torch on
one thread. The ratio of the pipeline to the bare GGA pass is what issue 23's cost floor
bounds (1.5 at batch 32). A benchmark, not a test: the figures are for comparing with one
another in one run.

    gga bench views mnist-lenet-low --batch 32 --repeats 20 [--json FILE]
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from detectors.engine import GradientEngine
from detectors.pipeline import GGAPipeline
from detectors.trust import TrustScorer
from models.repository import ModelRepository


def view_cost(
    model: str,
    repo: str | None = None,
    batch: int = 32,
    repeats: int = 20,
    out: Path | None = None,
) -> dict:
    """Time the pipeline, its GGA pass and each fused view; print a table, write JSON to ``out``.

    Returns:
        Medians in ms per batch: ``pipeline``, ``gga_pass`` and ``views`` (name -> ms).
    """
    torch.set_num_threads(1)
    repository = ModelRepository(repo)
    loaded = repository.load(model)
    scorer = TrustScorer.load(repository.path(model), loaded.card.weights_sha256, model)
    pipeline = GGAPipeline(loaded.module.eval(), scorer)
    shape = tuple(loaded.card.input_shape)
    pipeline.warmup(shape, (batch,))
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    spent = {name: [] for name in scorer.views}
    for name, view in scorer.views.items():
        score = view.predict_features

        def timed(inputs, score=score, name=name):
            start = time.perf_counter()
            out = score(inputs)
            spent[name].append(time.perf_counter() - start)
            return out

        view.predict_features = timed
    pipeline(x)  # first call: lazy set-up (the whitening of mahalanobis)
    for times in spent.values():
        times.clear()
    bare = GradientEngine(
        pipeline.model, dataclasses.replace(pipeline.options, squeeze=False, blocks=False)
    )
    bare(x)  # its strategy is tuned before the timing, as the pipeline's was
    whole, engine, gga = [], [], []
    for _ in range(repeats):  # interleaved, so that load changes hit all alike
        for run, times in ((pipeline, whole), (pipeline.engine, engine), (bare, gga)):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
    # The fused views: the only ones a request scores.
    figures = {
        "model": model,
        "batch": batch,
        "repeats": repeats,
        "pipeline": _ms(whole),
        "engine": _ms(engine),
        "gga_pass": _ms(gga),
        "views": {name: _ms(spent[name]) for name in scorer.view_names},
    }
    gga = figures["gga_pass"]
    lines = [
        f"{model}, batch {batch}, median of {repeats} (ms per batch):",
        f"  pipeline     {figures['pipeline']:8.2f}",
        f"  GGA pass     {gga:8.2f}   pipeline / GGA pass = {figures['pipeline'] / gga:.3f}",
        f"  engine       {figures['engine']:8.2f}   (the GGA pass and the extra forwards)",
    ]
    for name, cost in figures["views"].items():
        lines.append(f"  {name:12s} {cost:8.2f}   {cost / gga:6.1%} of it")
    sys.stdout.write("\n".join(lines) + "\n")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _ms(seconds: list[float]) -> float:
    return 1e3 * float(np.median(seconds))
