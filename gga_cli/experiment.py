"""``gga experiment``: reproducible experiments that regenerate a results section of the docs.

``gga experiment weight-decay`` runs the Tanay and Griffin weight-decay experiment on the zoo's
``mnist-lenet-low`` and ``mnist-lenet-high`` (``gga_lab.experiments.weight_decay``) and writes
its JSON, markdown and figure under ``--out-dir``.
"""

import argparse
import sys
import time
from pathlib import Path

WEIGHT_DECAY_MODELS = ("mnist-lenet-low", "mnist-lenet-high")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="run an experiment and write its results (JSON, markdown, figure)",
        description="Reproducible experiments; each writes JSON, a markdown section and figures.",
    )
    experiments = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    wd = experiments.add_parser(
        "weight-decay",
        help="smallest l2 perturbation to the next label, low vs high weight decay",
        description="For N MNIST test images correct on both models, the smallest l2 "
        "perturbation making each model predict the next label (0->1, ..., 9->0) at confidence "
        ">= 0.95; medians, a histogram figure and a transfer table between the two models "
        "(Tanay and Griffin 2018; Szegedy et al. 2014).",
    )
    wd.add_argument("--n", type=int, default=300, help="test images per model (default 300)")
    wd.add_argument("--data-dir", help="data set folder (default $GGA_DATA_DIR)")
    wd.add_argument("--out-dir", type=Path, default=Path("docs"), help="output folder (docs/)")
    wd.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    wd.add_argument(
        "--models",
        nargs=2,
        default=list(WEIGHT_DECAY_MODELS),
        metavar=("LOW", "HIGH"),
        help="the two models, low decay first (default: %(default)s)",
    )
    wd.add_argument(
        "--method",
        choices=("pgd", "lbfgs"),
        default="pgd",
        help="pgd: l2 PGD in a bisection on eps (default); lbfgs: Szegedy's L-BFGS (slow)",
    )
    wd.add_argument("--rounds", type=int, default=8, help="bisection rounds per input (8)")
    wd.add_argument("--steps", type=int, default=20, help="PGD steps per round (20)")
    wd.add_argument("--confidence", type=float, default=0.95, help="target probability (0.95)")
    wd.add_argument("--seed", type=int, default=0, help="seed of the image choice")
    wd.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the small LeNet batches gain little from more, and "
        "on a shared machine one thread measured several times faster than two; 0 keeps "
        "torch's default)",
    )
    wd.set_defaults(func=run_weight_decay)


def run_weight_decay(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from attacks.base import AttackParameterError
    from gga_lab.experiments.weight_decay import run_experiment, write_report
    from models.data import load_dataset
    from models.repository import ModelRepository

    if args.n <= 0:
        raise AttackParameterError(f"--n must be positive, got {args.n}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    repo = ModelRepository(args.repo)
    loaded = {name: repo.load(name) for name in args.models}
    datasets = {lm.card.dataset for lm in loaded.values()}
    if len(datasets) != 1:
        raise AttackParameterError(f"the models are trained on different data sets: {datasets}")
    test = load_dataset(datasets.pop(), "test", data_dir=args.data_dir)
    bars: dict[str, tqdm] = {}

    def progress(name: str, done: int, total: int) -> None:
        bar = bars.setdefault(name, tqdm(total=total, desc=name, unit="img"))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    start = time.monotonic()
    result = run_experiment(
        {name: lm.module for name, lm in loaded.items()},
        test.float(),
        torch.as_tensor(test.y, dtype=torch.long),
        n=args.n,
        seed=args.seed,
        min_confidence=args.confidence,
        method=args.method,
        cards={name: lm.card for name, lm in loaded.items()},
        progress=progress,
        rounds=args.rounds,
        steps=args.steps,
    )
    paths = write_report(result, args.out_dir)
    lines = [f"weight-decay experiment, n={args.n}, {time.monotonic() - start:.0f} s:"]
    for m in result.models:
        lines.append(
            f"  {m.name:<20} reached {m.success_rate:.3f}  median l2 {m.median_l2:.3f}  "
            f"mean l2 {m.mean_l2:.3f}"
        )
    for source, row in result.transfer.items():
        cells = ", ".join(f"{name} {cell['targeted']:.3f}" for name, cell in row.items())
        lines.append(f"  transfer (predicts target) of adversarials made on {source}: {cells}")
    lines += [f"  wrote {path}" for path in paths.values()]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
