"""``gga bench``: benchmarks. ``gga bench engine`` measures the GGA gradient engine (here);
``serve`` and ``overload`` the served model (``bench_serve.py``, ``bench_overload.py``); ``views``,
``batch-invariance``, ``imported`` and ``train-speed`` the rest (``bench_tools.py``). The measuring
code is in ``gga_lab.bench``; these modules only parse arguments.
"""

import argparse
import json
import sys
from pathlib import Path

from gga_cli.arguments import BenchArgumentError, positive_ints

DEFAULT_ZOO_MODELS = ("fashion-mnist-cnn", "mnist-lenet-low")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmarks", description="Benchmarks of the service's parts."
    )
    group = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    _register_engine(group)
    _register_imagenet_model(group)
    from gga_cli.bench_auth import register_auth
    from gga_cli.bench_overload import register_overload
    from gga_cli.bench_serve import register_serve
    from gga_cli.bench_tools import register_tools

    register_serve(group)
    register_overload(group)
    register_auth(group)
    register_tools(group)


def _register_engine(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "engine",
        help="the GGA gradient engine vs the reference loop and the limit",
        description="Time every gradient strategy, the engine's auto choice, the reference loop, "
        "the limit (t_fwd + C x t_vjp) and a plain forward, on zoo models and ResNet-20 with "
        "random weights at C=10 and C=100 (plus its top-5 and the CSM+features share). Prints "
        "a table; ratios are time ratios (below 1 = faster than that baseline).",
    )
    p.add_argument(
        "--model",
        action="append",
        help="zoo model name (repeatable; default: "
        f"{', '.join(DEFAULT_ZOO_MODELS)} where present, else random-weight stand-ins)",
    )
    p.add_argument("--repo", help="model repository folder")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument(
        "--batch-sizes", default="1,8,32,128", help="comma-separated (default 1,8,32,128)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=3.0,
        help="skip a measurement estimated above this many seconds per run (default 3)",
    )
    p.add_argument("--no-resnet", action="store_true", help="leave out the ResNet-20 cases")
    p.add_argument("--no-zoo", action="store_true", help="leave out the zoo models")
    p.add_argument(
        "--imagenet",
        action="store_true",
        help="add an ImageNet-layout ResNet-18 (224x224, 1,000 classes, random weights) at "
        "batch 1: all classes (the limit) and the classes read by default on this machine, "
        "with peak memory (minutes on a CPU)",
    )
    p.add_argument("--out", type=Path, help="write the records as JSON to this file")
    p.set_defaults(func=run_engine)


def _register_imagenet_model(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "imagenet-model",
        help="write an ImageNet-size ONNX classifier to import and serve (random weights)",
        description="Exports an ImageNet-layout ResNet-18 (224x224, random weights, built in "
        "code) as torch.onnx.export writes it by default, with labels.txt beside it, for "
        "`gga import` and `gga bench serve` at the size users run (docs/performance.md).",
    )
    p.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    p.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
    p.set_defaults(func=run_imagenet_model)


def run_imagenet_model(args: argparse.Namespace) -> int:
    from gga_lab.bench.imagenet import export_imagenet_onnx

    if args.classes < 2:
        raise BenchArgumentError("--classes must be at least 2")
    labels = export_imagenet_onnx(args.out, args.classes)
    sys.stdout.write(
        f"wrote {args.out} and {labels}; next: gga import {args.out} --name resnet18-imagenet "
        f"--labels {labels} --resize center-crop\n"
    )
    return 0


def run_engine(args: argparse.Namespace) -> int:
    import torch

    from gga_lab.bench.engine import (
        default_cases,
        format_table,
        resnet_case,
        run_benchmark,
        summarize_floors,
    )

    sizes = positive_ints(args.batch_sizes, "--batch-sizes")
    if args.repeats < 1 or args.threads < 1:
        raise BenchArgumentError("--repeats and --threads must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchArgumentError("--device cuda given but no CUDA device is visible; use cpu")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cases = [] if args.no_zoo else default_cases(args.model or None, args.repo, DEFAULT_ZOO_MODELS)
    top_case = None
    if not args.no_resnet:
        cases += [resnet_case(10)]
        top_case = resnet_case(100)
        cases.append(top_case)
    sys.stdout.write(
        f"gga bench engine: device {device}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, batch sizes {sizes}, {args.repeats} repeats (medians)\n"
    )
    records = run_benchmark(
        cases,
        sizes,
        args.repeats,
        device,
        args.budget_s,
        top_n_case=top_case,
        progress=lambda line: sys.stderr.write(line + "\n"),
    )
    floors = summarize_floors(records)
    imagenet = {}
    if args.imagenet:
        from gga_lab.bench.imagenet import imagenet_floors, imagenet_rows

        rows, choice, peaks = imagenet_rows(
            args.repeats, device, progress=lambda line: sys.stderr.write(line + "\n")
        )
        records += rows
        floors += imagenet_floors(rows, choice, peaks)
        imagenet = {"default_choice": choice.to_dict(), "peak_rss_gib": peaks}
    sys.stdout.write(format_table(records) + "\n\n")
    for line in floors:
        sys.stdout.write(line + "\n")
    if args.out:
        payload = {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "batch_sizes": sizes,
            "repeats": args.repeats,
            "records": [r.to_dict() for r in records],
            **({"imagenet": imagenet} if imagenet else {}),
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        sys.stdout.write(f"wrote {len(records)} records to {args.out}\n")
    return 0
