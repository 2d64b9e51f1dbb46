"""``gga attack``: attack a model on its test set (or an .npz) and save the adversarial inputs."""

import argparse
import sys
from pathlib import Path

import torch

from attacks.base import AttackParameterError, TargetMode
from gga_lab.attack_registry import LAB_ATTACKS
from models.errors import DataError

TARGET_MODES = ("given", "random", "least-likely")
PNG_COLUMNS = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attack",
        help="run an adversarial attack or corruption on a model",
        description="Attack the first N test images of the model's data set (or an .npz), print "
        "success rate, perturbation norms and accuracy under attack, and write an .npz with "
        f"x_adv, x, y, pred_adv and success. Attacks: {', '.join(LAB_ATTACKS)}.",
    )
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--attack", required=True, help="attack name (see the description)")
    p.add_argument("--eps", type=float, help="perturbation budget in [0, 1] pixel units")
    p.add_argument("--steps", type=int, help="iterations (bim, pgd, csa)")
    p.add_argument("--step-size", type=float, help="step per iteration (default eps/4)")
    p.add_argument("--norm", help="linf or l2")
    p.add_argument("--loss", help="ce or mse (bim, pgd)")
    p.add_argument(
        "--early-stop",
        action="store_true",
        default=None,
        help="stop each input at its first successful step (bim, pgd)",
    )
    p.add_argument(
        "--top-n",
        type=int,
        help="csa: the classes the attacked detector reads, most probable first (default: all; "
        "a fitted detector's is engine_options.top_n in its detector.json)",
    )
    p.add_argument("--targeted", help="target choice: given, random or least-likely")
    p.add_argument("--target", type=int, help="target class for --targeted given")
    p.add_argument("--n", type=int, default=100, help="number of test images (default 100)")
    p.add_argument("--npz", type=Path, help=".npz with x and y instead of the test data")
    p.add_argument("--data-dir", help="data set folder (default $GGA_DATA_DIR)")
    p.add_argument("--repo", help="model repository folder")
    p.add_argument(
        "--fit-n", type=int, default=500, help="training images the universal attack is fitted on"
    )
    p.add_argument("--batch-size", type=int, default=100, help="inputs per batch")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument(
        "--save-png", type=Path, help="folder for a clean/perturbation/adversarial figure"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random starts, targets, noise")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from attacks.evaluate import run_attack, summarize
    from models.data import load_dataset, stratified_indices
    from models.repository import ModelRepository

    spec = LAB_ATTACKS.spec(args.attack)  # unknown names fail before the model is loaded
    if args.n <= 0:
        raise AttackParameterError(f"--n must be positive, got {args.n}")
    target_mode = _target_mode(args.targeted, args.target)
    torch.manual_seed(args.seed)
    loaded = ModelRepository(args.repo).load(args.model)
    card = loaded.card
    if args.target is not None and not 0 <= args.target < card.num_classes:
        raise AttackParameterError(
            f"--target {args.target} is not a class of {card.name} (0..{card.num_classes - 1})"
        )
    attack = LAB_ATTACKS.make(
        args.attack,
        loaded.module,
        eps=args.eps,
        steps=args.steps,
        step_size=args.step_size,
        norm=args.norm,
        loss=args.loss,
        early_stop=args.early_stop,
        target_mode=target_mode,
        seed=args.seed,
        top_n=args.top_n,
    )
    if args.npz is not None:
        x, y = _load_npz(args.npz, tuple(card.input_shape))
        x, y = x[: args.n], y[: args.n]
        source = str(args.npz)
    else:
        test = load_dataset(card.dataset, "test", data_dir=args.data_dir, limit=args.n)
        x, y = test.float(), test.y
        source = f"{card.dataset} test"
    target = None if args.target is None else torch.full_like(y, args.target)
    if spec.needs_fit:
        x_fit = x
        if args.npz is None:
            # A class-balanced subset: training files may be sorted by class (the MNIST one is).
            train = load_dataset(card.dataset, "train", data_dir=args.data_dir)
            x_fit = train.subset(stratified_indices(train.y, args.fit_n, seed=args.seed)).float()
        attack.fit(x_fit)
        sys.stdout.write(
            f"universal perturbation fitted on {len(x_fit)} inputs: "
            f"fooling rate {attack.fooling_rate:.3f}\n"
        )
    result = run_attack(
        attack,
        x,
        y,
        target=target,
        batch_size=args.batch_size,
        progress=lambda it, total: tqdm(it, total=total, desc=args.attack, unit="batch"),
    )
    stats = summarize(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_adv": result.x_adv.numpy(),
        "x": result.x.numpy(),
        "y": result.y.numpy(),
        "pred_adv": result.pred_adv.numpy(),
        "success": result.success.numpy(),
        "pred_clean": result.pred_clean.numpy(),
    }
    if result.target is not None:
        arrays["target"] = result.target.numpy()
    np.savez_compressed(args.out, **arrays)
    sys.stdout.write(
        f"{args.attack} on {card.name} ({source}, n={len(y)}):\n"
        f"  success rate           {stats['success_rate']:.3f} (all inputs)\n"
        f"  success rate           {stats['success_rate_on_correct']:.3f} "
        "(inputs classified correctly before the attack)\n"
        f"  mean perturbation      l_inf {stats['mean_linf']:.4f}, l_2 {stats['mean_l2']:.4f}\n"
        f"  accuracy               clean {stats['clean_accuracy']:.3f}, "
        f"under attack {stats['adversarial_accuracy']:.3f}\n"
        f"  wrote {args.out}\n"
    )
    if args.save_png is not None:
        path = _save_png(args.save_png, args.attack, result.x, result.x_adv)
        sys.stdout.write(f"  wrote {path}\n")
    return 0


def _target_mode(targeted: str | None, target: int | None) -> TargetMode | None:
    """The TargetMode from --targeted/--target (--target alone means 'given')."""
    if targeted is None:
        return TargetMode.GIVEN if target is not None else None
    if targeted not in TARGET_MODES:
        raise AttackParameterError(
            f"--targeted {targeted!r} is not one of {', '.join(TARGET_MODES)}"
        )
    mode = TargetMode(targeted)
    if mode is TargetMode.GIVEN and target is None:
        raise AttackParameterError("--targeted given needs --target L (a class index)")
    if mode is not TargetMode.GIVEN and target is not None:
        raise AttackParameterError(f"--target is only used with --targeted given, not {targeted}")
    return mode


def _load_npz(path: Path, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Float inputs and labels from an .npz (``models.data.read_npz`` layouts)."""
    from models.data import read_npz

    data = read_npz(path)
    if data.shape != input_shape:
        raise DataError(
            f"{path}: images of shape {data.shape}; the model expects {tuple(input_shape)}"
        )
    return data.float(), data.y


def _save_png(folder: Path, name: str, x: torch.Tensor, x_adv: torch.Tensor) -> Path:
    """A figure of a few inputs: originals, perturbations (amplified) and adversarials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    n = min(PNG_COLUMNS, len(x))
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5), squeeze=False)
    delta = x_adv[:n] - x[:n]
    scale = float(delta.abs().max()) or 1.0
    rows = (
        ("original", x[:n], (0, 1)),
        ("perturbation", 0.5 + delta / (2 * scale), (0, 1)),
        ("adversarial", x_adv[:n], (0, 1)),
    )
    for r, (label, images, (lo, hi)) in enumerate(rows):
        for c in range(n):
            img = images[c].permute(1, 2, 0).numpy()
            ax = axes[r][c]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"{name}: perturbation shown scaled to ±{scale:.3f}")
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
