"""``gga bench views | batch-invariance | imported | train-speed | photo-model``: the lab's
smaller benchmarks.

Each prints its figures and, with ``--json``, writes them to a file; the measuring code is in
``gga_lab.bench``. The ``bench`` group (gga_cli/bench.py) adds them with
``register_tools(bench_subparsers)``.
"""

import argparse
import sys
from pathlib import Path

from gga_cli.arguments import positive_ints


def register_tools(subparsers: argparse._SubParsersAction) -> None:
    _register_views(subparsers)
    _register_batch_invariance(subparsers)
    _register_imported(subparsers)
    _register_train_speed(subparsers)
    _register_photo_model(subparsers)


def _register_views(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "views",
        help="what each fused trust view costs on top of the GGA pass",
        description="Times the served pipeline, its GGA pass alone and each fused view's "
        "scoring, for one model at one batch size, with torch on one thread.",
    )
    p.add_argument("model", help="model name")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs (median; default 20)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.set_defaults(func=_run_views)


def _run_views(args: argparse.Namespace) -> int:
    from gga_lab.bench.views import view_cost

    view_cost(args.model, args.repo, args.batch, args.repeats, args.json)
    return 0


def _register_batch_invariance(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "batch-invariance",
        help="how much a served prediction depends on its micro-batch",
        description="Scores the same test images alone and inside batches of other sizes "
        "through the served pipeline, and prints the largest difference of every served number.",
    )
    p.add_argument(
        "--models", help="comma-separated (default: the Fashion-MNIST models and the LeNets)"
    )
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--n", type=int, default=128, help="test images per model (default 128)")
    p.add_argument("--sizes", default="8,32,64", help="batch sizes compared with batch 1")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=_run_batch_invariance)


def _run_batch_invariance(args: argparse.Namespace) -> int:
    from gga_lab.bench.batch_invariance import DEFAULT_MODELS, report

    models = [m for m in args.models.split(",") if m.strip()] if args.models else DEFAULT_MODELS
    report(
        models, args.data_dir, args.n, positive_ints(args.sizes, "--sizes"), args.threads, args.json
    )
    return 0


def _register_imported(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "imported",
        help="the gradient engine on an imported model against the same native network",
        description="Exports the zoo's compact CNN as ONNX, torch.export and TorchScript, "
        "imports each as `gga import` does and times its engine against the native module's.",
    )
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (median; default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.set_defaults(func=_run_imported)


def _run_imported(args: argparse.Namespace) -> int:
    from gga_lab.bench.imported import report

    report(positive_ints(args.batch_sizes, "--batch-sizes"), args.repeats, args.threads, args.json)
    return 0


def _register_train_speed(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "train-speed",
        help="ResNet-20 training throughput per CPU setting",
        description="Times full SGD steps of ResNet-20 on CIFAR-10-sized batches in NCHW and "
        "channels_last, eager and compiled, at the given thread counts, in interleaved rounds.",
    )
    p.add_argument("--rounds", type=int, default=6, help="rounds of turns (default 6)")
    p.add_argument("--steps", type=int, default=4, help="steps per setting per round")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.set_defaults(func=_run_train_speed)


def _run_train_speed(args: argparse.Namespace) -> int:
    from gga_lab.bench.train_speed import report

    report(
        args.rounds,
        args.steps,
        positive_ints(args.threads, "--threads"),
        not args.no_compile,
        args.json,
    )
    return 0


def _register_photo_model(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "photo-model",
        help="a 224x224 ResNet-18 through import, fit and serve: memory and start-up",
        description="Builds a 10-class ImageNet-layout ResNet-18 in code (random convolutions, "
        "a linear-probe last layer), exports it as .pt2, then runs `gga import`, `gga fit --data` "
        "on a folder of CIFAR-10 JPEGs upscaled to 256, and `gga serve` twice (first start under "
        "32 clients sending 12-megapixel phone JPEGs, then a restart with the tuning cache). "
        "Prints each step's time and peak resident memory. Slow on a 2-core CPU: the fit is "
        "most of it.",
    )
    p.add_argument("--data-dir", type=Path, help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--images", type=int, default=300, help="labelled JPEGs (default 300)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--load-seconds", type=float, default=60.0, help="load duration (default 60)")
    p.add_argument(
        "--fit-args",
        default="",
        help="extra `gga fit` arguments, space-separated (e.g. '--pgd-steps 10')",
    )
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, model)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.set_defaults(func=_run_photo_model)


def _run_photo_model(args: argparse.Namespace) -> int:
    from gga_lab.bench.photo_model import run_photo_model, write_report

    report = run_photo_model(
        args.data_dir,
        images=args.images,
        clients=args.clients,
        load_seconds=args.load_seconds,
        fit_args=tuple(args.fit_args.split()),
        keep=args.keep,
        progress=lambda line: sys.stderr.write(line + "\n"),
    )
    sys.stdout.write("\n".join(report.lines()) + "\n")
    if args.json is not None:
        write_report(report, args.json)
    failed = [name for name, step in report.steps.items() if step.returncode != 0]
    return 1 if failed or not report.serve else 0
