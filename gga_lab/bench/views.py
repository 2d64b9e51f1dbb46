"""What each trust view costs on top of the GGA pass, for a zoo model at one batch size.

Times the served pipeline, its engine call alone, and each view's scoring inside the pipeline
(the same inputs the service computes), with torch on one thread. A benchmark, not a test: the
figures are for comparing with one another in one run.

    python gga_lab/bench/views.py mnist-lenet-low --batch 32 --repeats 20
"""

import argparse
import sys
import time

import numpy as np
import torch

from detectors.pipeline import GGAPipeline
from detectors.trust import TrustScorer
from models.repository import ModelRepository


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--repo", default=None, help="model repository (default: the zoo)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    repo = ModelRepository(args.repo)
    loaded = repo.load(args.model)
    scorer = TrustScorer.load(repo.path(args.model), loaded.card.weights_sha256, args.model)
    pipeline = GGAPipeline(loaded.module.eval(), scorer)
    shape = tuple(loaded.card.input_shape)
    pipeline.warmup(shape, (args.batch,))
    x = torch.rand(args.batch, *shape, generator=torch.Generator().manual_seed(0))
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
    whole, engine = [], []
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        start = time.perf_counter()
        pipeline(x)
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        pipeline.engine(x)
        engine.append(time.perf_counter() - start)
    lines = [
        f"{args.model}, batch {args.batch}, median of {args.repeats} (ms per batch):",
        f"  pipeline     {_ms(whole):8.2f}",
        f"  GGA pass     {_ms(engine):8.2f}   pipeline / GGA pass = {_ms(whole) / _ms(engine):.3f}",
    ]
    for name in scorer.view_names:  # the fused views: the only ones a request scores
        cost = _ms(spent[name])
        lines.append(f"  {name:12s} {cost:8.2f}   {cost / _ms(engine):6.1%} of it")
    sys.stdout.write("\n".join(lines) + "\n")


def _ms(seconds: list[float]) -> float:
    return 1e3 * float(np.median(seconds))


if __name__ == "__main__":
    main()
