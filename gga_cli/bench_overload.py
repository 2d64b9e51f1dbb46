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
        "whether each level meets the overload floors. For a server it started, it also reads "
        "the server's own mean time per prediction request from its /metrics (429s and 503s "
        "included), to tell time spent in the server from time spent in the load generator.",
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


def _server_seconds(url: str) -> tuple[float, float]:
    """(seconds, requests) the server's request histogram holds for predict and infer routes."""
    import httpx

    total = {"sum": 0.0, "count": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        for kind in total:
            prefix = f"gga_request_duration_seconds_{kind}{{"
            if line.startswith(prefix) and ("/predict" in line or "/infer" in line):
                total[kind] += float(line.rsplit(" ", 1)[1])
    return total["sum"], total["count"]


def _mean_since(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    seconds, requests = after[0] - before[0], after[1] - before[1]
    return round(seconds / requests, 4) if requests else None


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
    server_means: list[float | None] = []
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
                        before = _server_seconds(url) if server is not None else None
                        results.append(
                            run_level(url, args.model, x, clients, protocol, args.seconds)
                        )
                        if before is not None:
                            server_means.append(_mean_since(before, _server_seconds(url)))
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
    for level, mean_s in zip(document["levels"], server_means, strict=False):
        level["server_mean_s"] = mean_s  # type: ignore[index]
    table = format_table(results)
    if server_means:
        means = ", ".join(f"{r.clients} {r.protocol}: {m:.3f} s" for r, m in
                          zip(results, server_means, strict=False) if m is not None)  # fmt: skip
        table += f"\nmean time in the server per prediction request: {means}"
    sys.stdout.write(table + "\n\n" + json.dumps(document, indent=2) + "\n")
    if args.json:
        write_json(document, args.json)
    return 0
