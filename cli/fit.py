"""``gga fit MODEL``: fit and calibrate the model's GGA trust detector, write detector.json."""

import argparse
import sys
import time

from detectors.calibration import DEFAULT_ALPHA
from detectors.fit import DETECTOR_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a model's GGA trust detector and write detector.json",
        description="Compute GGA features of the model's training split, fit the detector on "
        "correctly classified inputs, calibrate trust scores on a disjoint part of the training "
        "split that the model was not trained on (its recipe's validation part; never the test "
        "set), and write detector.json into the model folder.",
    )
    p.add_argument("model", help="model name in the repository")
    p.add_argument(
        "--detector",
        choices=DETECTOR_CHOICES,
        default="loda",
        help="loda (unsupervised, the paper's) or logistic (clean vs FGSM/PGD)",
    )
    p.add_argument("--top-n", type=int, help="saliency for the N most probable classes only")
    p.add_argument(
        "--no-rescale",
        action="store_true",
        help="skip the reference code's logit rescaling z <- 10 z / max|z| (see docs/results.md)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"flag inputs whose trust is below this (default {DEFAULT_ALPHA})",
    )
    p.add_argument("--n-fit", type=int, default=10_000, help="training inputs to fit on")
    p.add_argument("--n-cal", type=int, default=2_000, help="training inputs to calibrate on")
    p.add_argument("--bins", type=int, help="LODA bins (default 100 grey, 500 colour)")
    p.add_argument("--projections", type=int, default=100, help="LODA projections")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the projections")
    p.add_argument("--batch-size", type=int, default=128, help="inputs per engine call")
    p.add_argument("--data-dir", help="data set folder (default $GGA_DATA_DIR)")
    p.add_argument("--repo", help="model repository folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detectors.fit import FitConfig, fit_trust_scorer
    from models.data import load_dataset
    from models.repository import ModelRepository
    from models.splits import held_out_indices

    config = FitConfig(
        detector=args.detector,
        n_fit=args.n_fit,
        n_cal=args.n_cal,
        alpha=args.alpha,
        seed=args.seed,
        projections=args.projections,
        bins=args.bins,
        top_n=args.top_n,
        rescale_logits=not args.no_rescale,
        batch_size=args.batch_size,
    )
    loaded = ModelRepository(args.repo).load(args.model)
    card = loaded.card
    train = load_dataset(card.dataset, "train", data_dir=args.data_dir)
    held_out = held_out_indices(card.recipe, train.y)
    if held_out is None:
        sys.stderr.write(
            f"{card.name}: its card names no training images it was not trained on (no recipe, "
            "or one without a validation part); calibrating on training inputs, so trust "
            "scores may flag new clean inputs more often than alpha\n"
        )
    start = time.perf_counter()
    scorer = fit_trust_scorer(
        loaded.module,
        train.float(),
        train.y,
        model_name=card.name,
        weights_sha256=card.weights_sha256,
        config=config,
        dataset=card.dataset,
        held_out=held_out,
    )
    scorer.provenance["seconds"] = round(time.perf_counter() - start, 1)
    path = scorer.save(loaded.path)
    p = scorer.provenance
    sys.stdout.write(
        f"{card.name}: {config.detector} fitted on {p['n_fit']} and calibrated on {p['n_cal']} "
        f"correctly classified training inputs ({p['calibration_inputs']}) in "
        f"{p['seconds']:.0f} s; alpha {scorer.alpha}; "
        f"wrote {path}\n"
    )
    return 0
