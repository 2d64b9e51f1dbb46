"""``gga robustness MODEL...``: clean and PGD accuracy, optionally recorded in the model cards."""

import argparse
import sys
from fractions import Fraction

from models.errors import GGAUserError
from models.repository import ModelRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "robustness", help="clean and l_inf PGD accuracy of models (optionally into their cards)"
    )
    p.add_argument("models", nargs="+", help="model names in the repository")
    p.add_argument(
        "--eps",
        default="0.05,0.1",
        help="comma-separated l_inf budgets, decimals or fractions (e.g. 8/255)",
    )
    p.add_argument("--steps", type=int, default=40, help="PGD steps (step size 2.5 eps / steps)")
    p.add_argument("--n", type=int, default=1000, help="first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repo", help="model repository folder")
    p.add_argument("--data-dir", help="data sets folder ($GGA_DATA_DIR)")
    p.add_argument("--record", action="store_true", help="write the figures into each card")
    p.set_defaults(func=run)


def parse_budgets(text: str) -> list[tuple[str, float]]:
    """``"0.05,8/255"`` -> ``[("0.05", 0.05), ("8/255", 0.0313...)]``: each budget's name in the
    card (a fraction keeps its form, a decimal is written as ``%g``) and its value.

    Raises:
        GGAUserError: a budget is neither a number nor a fraction, or is not in (0, 1].
    """
    budgets = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(Fraction(part))
        except (ValueError, ZeroDivisionError):
            message = f"--eps: {part!r} is not a number or a fraction like 8/255"
            raise GGAUserError(message) from None
        if not 0.0 < value <= 1.0:
            raise GGAUserError(f"--eps: {part} is outside (0, 1] (pixels are in [0, 1])")
        budgets.append((part if "/" in part else f"{value:g}", value))
    return budgets


def run(args: argparse.Namespace) -> int:
    import torch

    from attacks.pgd import PGD
    from models.data import load_dataset

    budgets = parse_budgets(args.eps)
    repo = ModelRepository(args.repo)
    for name in args.models:
        loaded = repo.load(name)
        data = load_dataset(loaded.card.dataset, "test", data_dir=args.data_dir, limit=args.n)
        x, y = data.float(), data.y
        with torch.no_grad():
            clean = (loaded.module(x).argmax(1) == y).float().mean().item()
        figures = {"clean_accuracy": round(clean, 4)}
        for label, eps in budgets:
            attack = PGD(loaded.module, eps=eps, steps=args.steps, seed=args.seed)
            correct = 0
            for i in range(0, len(x), 250):
                result = attack(x[i : i + 250], y[i : i + 250])
                correct += (result.pred == y[i : i + 250]).sum().item()
            figures[f"pgd_linf_{label}_accuracy"] = round(correct / len(x), 4)
        line = ", ".join(f"{k} {100 * v:.1f}%" for k, v in figures.items())
        sys.stdout.write(f"{name}: {line} (first {len(x)} test images, PGD {args.steps} steps)\n")
        if args.record:
            loaded.card.metrics["robustness"] = {
                **figures,
                "test_images": len(x),
                "pgd_steps": args.steps,
                "seed": args.seed,
                "command": f"gga robustness {name} --eps {args.eps} --n {args.n} --record",
            }
            loaded.card.save(loaded.path)
    return 0
