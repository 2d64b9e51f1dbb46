"""``gga bench serve``: the served model under 1, 8 and 32 concurrent clients.

The ``bench`` group (gga_cli/bench.py) adds this sub-subcommand with
``bench_serve.register_serve(bench_subparsers)``.
"""

import argparse
import json
import sys
from pathlib import Path


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="benchmark the real server (loopback) against the offline engine",
    )
    p.add_argument("--model", default="fashion-mnist-cnn")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument(
        "--clients", default="1,8,32", help="comma-separated concurrency levels (default 1,8,32)"
    )
    p.add_argument("--requests", type=int, default=2000, help="most requests per level")
    p.add_argument("--seconds", type=float, default=20.0, help="longest per level")
    p.add_argument(
        "--threads", type=int, help="torch threads for server and offline run (default: torch's)"
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="let clients and server share every core (default: clients on the last core, "
        "server and offline run on the others)",
    )
    p.add_argument(
        "--image-format",
        choices=("auto", "png", "jpeg"),
        default="auto",
        help="upload format, one image per request (default auto: JPEG for colour models, "
        "PNG for grey ones)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds the server may take to load and warm up (default 300)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gga_lab.bench.serve import format_table, run_benchmark, split_cpus, to_json

    levels = tuple(int(c) for c in args.clients.split(",") if c.strip())
    results = run_benchmark(
        model=args.model,
        repo=args.repo,
        data_dir=args.data_dir,
        levels=levels,
        max_requests=args.requests,
        max_seconds=args.seconds,
        threads=args.threads,
        pin=not args.no_pin,
        image_format=args.image_format,
        ready_timeout_s=args.ready_timeout,
    )
    server_cpus, client_cpus = split_cpus(not args.no_pin)
    setup = {
        "model": args.model,
        "image_format": args.image_format,
        "server_cpus": sorted(server_cpus) if server_cpus else "all",
        "client_cpus": sorted(client_cpus) if client_cpus else "all",
        "threads": args.threads or (len(server_cpus) if server_cpus else "torch default"),
    }
    report = to_json(results, setup)
    sys.stdout.write(format_table(results) + "\n\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
