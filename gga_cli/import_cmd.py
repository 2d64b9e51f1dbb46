"""``gga import FILE --name NAME``: a user's ONNX, torch.export or TorchScript model as a folder."""

import argparse
import sys
from pathlib import Path

from models.errors import GGAUserError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        message = f"expected comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _shape(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers), got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="import your own classifier (ONNX, torch.export .pt2, TorchScript .pt)",
        description="Check a model file and write it into the model repository as a folder "
        "with a card: the file's format is read from its bytes (pickles and torch.save "
        "checkpoints are refused, never loaded), ONNX is converted with onnx2torch and checked "
        "against onnxruntime, and every format is checked for eval mode (the same input twice, "
        "and in other batches, gives the same logits) and input gradients. Then fit its trust "
        "score with `gga fit NAME --data DIR`. See docs/models.md.",
    )
    p.add_argument("file", type=Path, help="the model file")
    p.add_argument("--name", required=True, help="the model's name in the repository")
    p.add_argument("--labels", type=Path, help="class names, one a line, in output order")
    p.add_argument(
        "--input-shape", type=_shape, help="C,H,W; needed where the file leaves them dynamic"
    )
    p.add_argument(
        "--features",
        help="graph node whose output are the penultimate features (default: the final linear "
        "layer's input, where the graph ends in one)",
    )
    p.add_argument(
        "--no-features", action="store_true", help="serve without the feature-based views"
    )
    p.add_argument(
        "--mean",
        type=_floats,
        help="per-channel mean the model's input is normalised with (default 0: [0, 1] pixels)",
    )
    p.add_argument("--std", type=_floats, help="per-channel std of that normalisation (default 1)")
    p.add_argument(
        "--resize",
        choices=("stretch", "center-crop", "none"),
        default="stretch",
        help="how images of another size are fitted to the input (none: refuse them)",
    )
    p.add_argument(
        "--top-n",
        default="auto",
        help="classes the engine reads per input: auto (the default: measured on this machine, "
        "all classes where they cost at most 8 forwards or 0.25 s per image, else the most "
        "probable N that do, never under 10), all, or a number; recorded in the card, and "
        "`gga fit` chooses again (docs/models.md)",
    )
    p.add_argument(
        "--saliency-layer",
        default="auto",
        help="where the engine takes GGA's gradients: auto (the default: the input, or a middle "
        "block where 10 classes at the input cost over the budget), input, or a block's index; "
        "recorded in the card (docs/models.md)",
    )
    p.add_argument("--version", default="1", help="the card's version")
    p.add_argument("--description", default="", help="the card's description")
    p.add_argument("--force", action="store_true", help="replace a model of the same name")
    p.add_argument("--repo", help="model repository folder (default $GGA_REPO or the zoo)")
    p.set_defaults(func=run)


def _indented(line: str) -> None:
    sys.stderr.write(f"  {line}\n")


def _engine_chooser(requested: int | str, saliency_layer: int | str | None):
    """The importer's ``choose_engine``: the rows read (and where), measured or as given."""
    from detectors.row_cost import MIN_ROWS, choose_rows
    from gga_cli.fit import check_saliency_layer

    def choose(model, input_shape, num_classes) -> dict[str, object]:
        check_saliency_layer(saliency_layer, model, input_shape)  # before any timing
        if requested == "auto" and num_classes > MIN_ROWS:
            sys.stderr.write(f"measuring the engine's cost at {num_classes} classes...\n")
        choice = choose_rows(
            requested,
            model,
            input_shape,
            num_classes,
            saliency_layer=saliency_layer,
            log=_indented,
        )
        sys.stderr.write(f"classes read per input: {choice.reason}\n")
        return choice.to_dict()

    return choose


def run(args: argparse.Namespace) -> int:
    from detectors.row_cost import parse_saliency_layer, parse_top_n
    from models.imported.importer import ImportOptions, import_model
    from models.repository import ModelRepository

    if args.features and args.no_features:
        raise GGAUserError("--features and --no-features exclude each other")
    requested = parse_top_n(args.top_n)
    saliency_layer = parse_saliency_layer(args.saliency_layer)
    repository = ModelRepository(args.repo)
    options = ImportOptions(
        name=args.name,
        labels=args.labels,
        input_shape=args.input_shape,
        features=args.features,
        no_features=args.no_features,
        mean=args.mean,
        std=args.std,
        resize=args.resize,
        version=args.version,
        description=args.description,
        force=args.force,
        choose_engine=_engine_chooser(requested, saliency_layer),
    )
    card = import_model(args.file, repository.root, options)
    config = card.config
    parity = config.get("onnx", {}).get("parity") if isinstance(config.get("onnx"), dict) else None
    sys.stdout.write(
        f"{card.name}: {config['format']} model, input {','.join(map(str, card.input_shape))}, "
        f"{card.num_classes} classes, features {config['features'] or 'none'} "
        f"({config['features_how']})"
        + (f", onnxruntime parity {parity['max_abs_diff']:.2e}" if parity else "")
        + (f", top {card.top_n} classes read" if card.top_n is not None else "")
        + (f" at block {card.saliency_layer}" if card.saliency_layer is not None else "")
        + f"; wrote {repository.root / card.name}. Next: gga fit {card.name} --data DIR\n"
    )
    return 0
