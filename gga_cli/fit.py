"""``gga fit MODEL``: fit the model's multi-view trust scorer and write detector.json.

With ``--data DIR`` the images are the user's own (a folder of class folders, or the image-folder
tarball): the form for an imported model (``gga import``), whose data set the project does not
know. They are split with the seed into the fit, tuning and calibration parts.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from detectors.calibration import DEFAULT_ALPHA, TAILS
from detectors.fusion import FUSIONS
from detectors.views import VIEWS
from gga_cli.arguments import batch_size_for
from gga_lab.fit import RESCALE_CHOICES
from gga_lab.selection import CRITERIA


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a model's trust score (views, fusion, calibration) and write detector.json",
        description="Fit every trust view the model can serve on part of its training split, "
        "calibrate each view, make untrusted inputs (FGSM, PGD, noise, corruptions, ...) from "
        "other training images to choose the rescaling, the fusion and its views by "
        "leave-one-kind-out measurement, and calibrate the fused score on training images the "
        "model was not trained on (never the test set). Writes detector.json into the model "
        "folder, with every choice and what it measured. See docs/detectors.md.",
    )
    p.add_argument("model", help="model name in the repository")
    p.add_argument(
        "--views",
        type=_names,
        help=f"comma-separated views to choose the fusion among (default: those of "
        f"{','.join(VIEWS)} the model can serve)",
    )
    p.add_argument(
        "--fusion",
        choices=sorted(FUSIONS),
        help="fuse with this rule over all (or --views) views (default: chosen by measurement)",
    )
    p.add_argument(
        "--rescale",
        choices=RESCALE_CHOICES,
        default="auto",
        help="the reference code's logit rescaling z <- 10 z / max|z| before the GGA loss: "
        "chosen by measurement (auto, the default) or forced",
    )
    p.add_argument("--no-rescale", action="store_true", help="same as --rescale off")
    p.add_argument(
        "--criterion",
        choices=tuple(CRITERIA),
        default="strength",
        help="what the choice of fusion and rescaling maximises over the left-out kinds: their "
        "mean AUROC (auroc, the default), the mean share flagged at --alpha (tnr, the "
        "threshold where the service works), the share flagged on the worst kind (worst) or "
        "the most lost on a kind against the best single view there (strength); "
        "docs/detectors.md",
    )
    p.add_argument(
        "--view-tail",
        choices=TAILS,
        default="none",
        help="each view's p-value beyond its largest calibration score: floored at 1/(n+1) "
        "(none, the default, as the zoo's detectors) or extrapolated along an exponential tail "
        "(docs/detectors.md)",
    )
    p.add_argument(
        "--untrusted-kinds",
        type=_names,
        help="comma-separated kinds of untrusted input made from training images to choose the "
        "fusion on (default: all ten; docs/detectors.md)",
    )
    p.add_argument(
        "--top-n",
        default="auto",
        help="classes read per input: auto (the default: at most what the engine affords on "
        "this machine, 8 forwards or 0.25 s per image, never under 10; then the fewest under "
        "that which detect as well), all, or a number of the most probable (docs/models.md)",
    )
    p.add_argument(
        "--saliency-layer",
        default="auto",
        help="where GGA's gradients are taken: auto (the default: the input, or a middle block "
        "where 10 classes at the input cost over the budget), input, or a block's index "
        "(0 = shallowest): the backward stops there (cheaper), channel max off; where it keeps "
        "detection is measured in docs/performance.md (`gga lab saliency-layers`)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"flag inputs whose trust is below this (default {DEFAULT_ALPHA})",
    )
    p.add_argument("--n-fit", type=int, default=10_000, help="training images to fit the views on")
    p.add_argument("--n-view-cal", type=int, default=1_000, help="images for the views' p-values")
    p.add_argument("--n-tune", type=int, default=1_000, help="images to choose the fusion with")
    p.add_argument("--n-cal", type=int, default=2_000, help="images for the final calibration")
    p.add_argument("--bins", type=int, help="LODA bins of gga-paper (default 100 grey, 500 colour)")
    p.add_argument("--projections", type=int, default=100, help="LODA projections of gga-paper")
    p.add_argument("--knn-k", type=int, default=10, help="k of the knn view")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD steps of the tuning attacks")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, views and attacks")
    p.add_argument(
        "--batch-size",
        type=int,
        help="inputs per engine call and attack batch (default: as many as GGA_ENGINE_MEMORY_GB "
        "holds for this model, at most 128; docs/models.md)",
    )
    p.add_argument("--data-dir", help="data set folder (default $GGA_DATA_DIR)")
    p.add_argument(
        "--data",
        type=Path,
        help="your own labelled images instead of the card's data set: a folder with one "
        "sub-folder per class (named as the card's classes), or a .tar.gz of train/<class>/*",
    )
    p.add_argument("--repo", help="model repository folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detectors.row_cost import parse_saliency_layer, parse_top_n
    from gga_lab.fit import FitConfig, fit_trust_scorer
    from gga_training.splits import held_out_indices
    from models.data import load_dataset
    from models.repository import ModelRepository

    top_n = parse_top_n(args.top_n)
    saliency_layer = parse_saliency_layer(args.saliency_layer)
    config = FitConfig(
        views=args.views,
        fusion=args.fusion,
        rescale="off" if args.no_rescale else args.rescale,
        criterion=args.criterion,
        view_tail=args.view_tail,
        n_fit=args.n_fit,
        n_view_cal=args.n_view_cal,
        n_tune=args.n_tune,
        n_cal=args.n_cal,
        alpha=args.alpha,
        seed=args.seed,
        projections=args.projections,
        bins=args.bins,
        knn_k=args.knn_k,
        top_n=None if top_n == "all" else top_n,
        saliency_layer=saliency_layer,
        pgd_steps=args.pgd_steps,
        **({"untrusted_kinds": args.untrusted_kinds} if args.untrusted_kinds else {}),
    )
    loaded = ModelRepository(args.repo).load(args.model)
    card = loaded.card
    check_saliency_layer(saliency_layer, loaded.module, card.input_shape)
    config = dataclasses.replace(
        config, batch_size=batch_size_for(args.batch_size, loaded.module, card.input_shape)
    )
    if args.data is not None:
        return _fit_on_user_images(args, config, loaded)
    train = load_dataset(card.dataset, "train", data_dir=args.data_dir)
    held_out = held_out_indices(card.recipe, train.y)
    if held_out is None:
        sys.stderr.write(
            f"{card.name}: its card names no training images it was not trained on (no recipe, "
            "or one without a validation part); calibrating on training inputs, so trust "
            "scores may flag new clean inputs more often than alpha\n"
        )
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
    _report(card.name, scorer, scorer.save(loaded.path))
    return 0


def check_saliency_layer(layer: int | str | None, model, input_shape) -> None:
    """Refuse a ``--saliency-layer`` the model has no block for, before any work."""
    from detectors.engine import EngineOptions, GradientEngine
    from models.errors import GGAUserError

    if not isinstance(layer, int):  # the input, or chosen by cost
        return
    try:
        GradientEngine(model, EngineOptions(saliency_layer=layer)).cut(input_shape)
    except ValueError as err:
        raise GGAUserError(f"--saliency-layer {layer}: {err}") from err


def _fit_on_user_images(args: argparse.Namespace, config, loaded) -> int:
    from gga_lab.fit import fit_trust_scorer, part_accuracies
    from models.data.labelled import read_labelled_images

    card = loaded.card
    data = read_labelled_images(
        args.data, card.class_names, card.input_shape, resize=card.preprocessing.resize
    )
    x, y = data.float(), data.y
    accuracy = part_accuracies(loaded.module, x, y, config)
    sys.stdout.write(
        f"{card.name}: {len(x)} labelled images from {args.data}; accuracy "
        + ", ".join(f"{part} {100 * a:.1f}%" for part, a in accuracy.items())
        + "\n"
    )
    scorer = fit_trust_scorer(
        loaded.module,
        x,
        y,
        model_name=card.name,
        weights_sha256=card.weights_sha256,
        config=config,
        dataset=f"user images ({args.data.name})",
    )
    scorer.provenance["accuracy"] = accuracy
    card.metrics = {**card.metrics, "user_data_accuracy": accuracy}
    card.save(loaded.path)
    _report(card.name, scorer, scorer.save(loaded.path))
    return 0


def _report(name: str, scorer, path) -> None:
    p = scorer.provenance
    fusion = p["choices"]["fusion"]
    _report_classes_read(name, scorer.engine_options.get("top_n"), p["choices"])
    sys.stdout.write(
        f"{name}: views {','.join(scorer.view_names)} fused by {fusion['chosen']} "
        f"(left-out-kind {fusion.get('criterion_name', 'auroc')} "
        f"{fusion['scores'][fusion['chosen']]:.3f}; logits "
        f"{'rescaled' if p['choices']['rescale_logits']['chosen'] else 'not rescaled'}); "
        f"views fitted on {p['n_fit']} images, calibrated on {p['n_cal']} "
        f"({p['calibration_inputs']}) in {p['seconds']:.0f} s; alpha {scorer.alpha}; "
        f"wrote {path}\n"
    )


def _report_classes_read(name: str, top_n: int | None, choices: dict) -> None:
    """One line on how many classes are read, where that was measured or chosen."""
    read = choices.get("classes_read") or {}
    affordable, chosen = read.get("affordable") or {}, read.get("by_detection")
    if top_n is None and not affordable.get("ms_per_image"):
        return  # ten classes or fewer, or --top-n all: nothing was measured
    line = f"{name}: {'all' if top_n is None else f'the top {top_n}'} classes read per input"
    if affordable.get("saliency_layer") is not None:
        line += f", GGA's gradients at block {affordable['saliency_layer']}"
    if chosen:
        measured = ", ".join(f"{n}: {v:.3f}" for n, v in chosen["measured"].items())
        line += f" (mean AUROC by N, {measured}; affordable here: {affordable.get('reason')})"
    elif affordable.get("reason"):
        line += f" ({affordable['reason']})"
    sys.stdout.write(line + "\n")
