"""``gga models``: list the model repository."""

import argparse
import json
import sys

from models.repository import ModelRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the models in a repository")
    p.add_argument("--repo", help="model repository folder (default: $GGA_REPO or the shipped zoo)")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    repo = ModelRepository(args.repo)
    cards = [repo.card(name) for name in repo.names()]
    if args.json:
        sys.stdout.write(json.dumps([c.to_dict() for c in cards], indent=2) + "\n")
        return 0
    rows = [("NAME", "VERSION", "ARCHITECTURE", "DATASET", "TEST ACC")]
    for c in cards:
        acc = c.metrics.get("test_accuracy")
        rows.append(
            (c.name, c.version, c.architecture, c.dataset, f"{100 * acc:.2f}%" if acc else "-")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
    return 0
