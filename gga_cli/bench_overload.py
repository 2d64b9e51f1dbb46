"""``gga bench overload``: 256 and 512 clients against the server, v1 and v2, and the floors.

The ``bench`` group (gga_cli/bench.py) adds this sub-subcommand with
``bench_overload.register_overload(bench_subparsers)``.
"""

import argparse
import sys
import tempfile
from pathlib import Path


def register_overload(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "overload",
        help="drive the server at 10x overload and check what clients see",
        description="Starts `gga serve` on loopback (or drives --url) with N concurrent "
        "keep-alive clients per level and protocol, probing /v2/health/ready meanwhile; prints "
        "statuses, p50/p99 of the 200s, dropped connections and the slowest health probe, and "
        "whether each level meets the overload floors.",
    )
    p.add_argument("--model", default="fashion-mnist-cnn")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--clients", default="256,512", help="comma-separated levels (default 256,512)")
    p.add_argument("--protocols", default="v1,v2", help="v1 (multipart), v2 (JSON) or both")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each level")
    p.add_argument("--url", help="drive this running deployment instead of starting a server")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="GGA_X=VALUE",
        help="a setting of the started server (repeatable), e.g. GGA_QUEUE_BUDGET_S=0",
    )
    p.add_argument("--no-pin", action="store_true", help="do not give the clients a core")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    # One INFO line per request from httpx would cost the load generator more than the requests.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from gga_lab.bench.overload import format_table, report, run_level, sample_images, write_json
    from gga_lab.bench.serve import ServerProcess, _pinned, split_cpus

    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    env = dict(item.split("=", 1) for item in args.set)
    x = sample_images(args.data_dir)
    server_cpus, client_cpus = split_cpus(not args.no_pin)
    results = []
    with tempfile.TemporaryDirectory() as work:
        if args.url:
            url, server = args.url, None
        else:
            server = ServerProcess(args.model, args.repo, Path(work), env, server_cpus)
            server.__enter__()
            url = server.url
        try:
            with _pinned(client_cpus):
                for protocol in protocols:
                    for clients in levels:
                        results.append(
                            run_level(url, args.model, x, clients, protocol, args.seconds)
                        )
        finally:
            if server is not None:
                server.__exit__()
    setup = {
        "model": args.model,
        "url": args.url or "gga serve on loopback",
        "settings": env,
        "seconds_per_level": args.seconds,
        "server_cpus": sorted(server_cpus) if server_cpus and not args.url else "all",
        "client_cpus": sorted(client_cpus) if client_cpus else "all",
    }
    document = report(results, setup)
    sys.stdout.write(format_table(results) + "\n\n" + json.dumps(document, indent=2) + "\n")
    if args.json:
        write_json(document, args.json)
    return 0
