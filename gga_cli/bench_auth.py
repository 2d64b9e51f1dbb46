"""``gga bench auth``: what caching key checks saves per request, on a real store.

The ``bench`` group (gga_cli/bench.py) adds this sub-subcommand with
``bench_auth.register_auth(bench_subparsers)``. The measurement lives here rather than in
``gga_lab.bench``: it drives the service's own ``Authenticator``, and the lab never imports the
service (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the service is imported when the command runs: `gga --help` stays light
    from service.auth import Authenticator


def register_auth(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "auth",
        help="time the key check with and without its cache (GGA_AUTH_CACHE_S)",
        description="Creates one API key named bench-auth in the store (revoked at the end: use "
        "a scratch database), then checks it the way the request path does (on the event loop "
        "when cached, on a worker thread when the store must be asked), first with the cache "
        "off (every request reads its key from the store, as before GGA_AUTH_CACHE_S), then "
        "with it on. Prints the time per request and the SQL statements per request, and "
        "writes them as JSON.",
    )
    p.add_argument("--database-url", help="SQLAlchemy URL of the store (default GGA_DATABASE_URL)")
    p.add_argument("--requests", type=int, default=2000, help="checks per mode (default 2000)")
    p.add_argument("--cache-s", type=float, default=5.0, help="the cache's TTL (default 5)")
    p.add_argument("--json", type=Path, default=Path("bench-auth.json"), help="output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from service.settings import get_settings

    settings = get_settings(database_url=args.database_url)
    document = measure(settings.database_url, args.requests, args.cache_s, settings.key_pepper)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    sys.stdout.write(format_table(document) + f"\n\nwritten to {args.json}\n")
    return 0


def measure(url: str, requests: int, cache_s: float, pepper: str = "") -> dict[str, object]:
    """Time ``requests`` key checks with the cache off and on.

    Args:
        url: The store (migrated here if it is not yet).
        requests: Checks per mode.
        cache_s: The cache's TTL for the cached mode.
        pepper: ``GGA_KEY_PEPPER``.

    Returns:
        The setup and, per mode, microseconds per check (mean, p50, p99) and SQL statements
        per check.
    """
    import asyncio

    from sqlalchemy import event

    from service.auth import Authenticator, create_key
    from service.store import Database
    from service.store import repository as repo

    db = Database(url)
    db.upgrade()
    statements = [0]

    def count(*_args: object) -> None:
        statements[0] += 1

    event.listen(db.engine, "before_cursor_execute", count)
    key_id, key = create_key(db, "bench-auth", pepper=pepper)
    modes = {}
    try:
        for mode, ttl in (("cache off", 0.0), (f"cache {cache_s:g} s", cache_s)):
            auth = Authenticator(db, pepper=pepper, cache_s=ttl)
            auth.authenticate(key)  # a pooled connection open, as in a running server
            statements[0] = 0
            seconds = asyncio.run(_time_checks(auth, key, requests))
            modes[mode] = _summary(seconds, statements[0] / requests)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
        repo.revoke_key(db, key_id)
        backend = db.backend
        db.dispose()
    return {
        "setup": {"backend": backend, "requests_per_mode": requests, "cache_s": cache_s},
        "modes": modes,
    }


async def _time_checks(auth: Authenticator, key: str, requests: int) -> list[float]:
    """Each check as ``service.protocol.deps`` makes it: cache on the loop, store off it."""
    import asyncio
    import time

    seconds = []
    for _ in range(requests):
        start = time.perf_counter()
        if auth.cached(key) is None:
            await asyncio.to_thread(auth.authenticate, key)
        seconds.append(time.perf_counter() - start)
    return seconds


def _summary(seconds: list[float], statements_per_check: float) -> dict[str, float]:
    import numpy as np

    us = np.asarray(seconds) * 1e6
    return {
        "mean_us": round(float(us.mean()), 1),
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
        "sql_statements_per_check": round(statements_per_check, 4),
    }


def format_table(document: dict) -> str:
    setup = document["setup"]
    lines = [
        f"key check on {setup['backend']}, {setup['requests_per_mode']} checks per mode",
        f"{'mode':<14} {'mean us':>9} {'p50 us':>9} {'p99 us':>9} {'SQL/check':>10}",
    ]
    for mode, row in document["modes"].items():
        lines.append(
            f"{mode:<14} {row['mean_us']:>9.1f} {row['p50_us']:>9.1f} {row['p99_us']:>9.1f} "
            f"{row['sql_statements_per_check']:>10.4f}"
        )
    return "\n".join(lines)
