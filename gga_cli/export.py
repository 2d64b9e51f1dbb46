"""``gga export NAME --out FILE``: ONNX export with a parity check on real test images."""

import argparse
import sys
from pathlib import Path

from models.errors import GGAUserError
from models.repository import ModelRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX and check parity")
    p.add_argument("name", help="model name in the repository")
    p.add_argument("--out", type=Path, help="ONNX file (default: the model folder's model.onnx)")
    p.add_argument("--repo", help="model repository folder")
    p.add_argument("--data-dir", help="data sets folder for the parity check ($GGA_DATA_DIR)")
    p.add_argument("--n", type=int, default=1000, help="test images for the parity check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The [train] extra; imported first so that its absence is reported as such, not as a
    # failure deep inside torch.onnx.
    import onnx  # noqa: F401

    from models.data import load_dataset
    from models.export import PARITY_ATOL, check_parity, export_onnx, onnx_logits

    loaded = ModelRepository(args.repo).load(args.name)
    out = export_onnx(loaded, args.out or loaded.path / "model.onnx")
    test = load_dataset(loaded.card.dataset, "test", data_dir=args.data_dir, limit=args.n)
    x = test.float()
    parity = check_parity(loaded, out, x)
    accuracy = float((onnx_logits(out, x.numpy()).argmax(1) == test.y.numpy()).mean())
    sys.stdout.write(
        f"{out}: max |logit diff| {parity.max_abs_diff:.2e} (limit {PARITY_ATOL:.0e}), "
        f"same argmax {100 * parity.same_argmax:.1f}%, onnxruntime accuracy "
        f"{100 * accuracy:.2f}% on {parity.n} test images\n"
    )
    if not parity.ok:
        raise GGAUserError(f"ONNX parity check failed for {args.name}: see the figures above")
    return 0
