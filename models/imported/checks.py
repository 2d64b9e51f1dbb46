"""What an import verifies about a graph before it is written to the repository.

- It takes batches of any size and returns (B, classes) logits.
- It runs in eval mode: the same input twice gives the same logits (no dropout left on), and an
  input's logits do not depend on the rest of its batch (no BatchNorm on batch statistics).
- Input gradients flow through it and are finite (the trust score is built from them).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from models.imported.errors import ModelImportError

# Relative to the logits' scale: float32 kernels may sum in another order at another batch size.
EVAL_RTOL = 1e-4
CHECK_BATCH = 6
RE_EXPORT = "export the model after calling model.eval()"


@dataclass(frozen=True)
class GraphChecks:
    """What the checks measured (recorded in the card)."""

    num_classes: int
    repeat_max_diff: float
    batch_max_diff: float
    gradient_finite: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _logits(model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # a graph with a fixed batch size, or another input shape
        raise ModelImportError(
            f"the model fails on {what} of shape {tuple(x.shape)} ({type(err).__name__}: "
            f"{str(err)[:300]}); it must take (N, C, H, W) batches of any N: export it with a "
            "dynamic batch axis, and check --input-shape"
        ) from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelImportError(
            f"the model returns {shape} for a batch of {x.shape[0]}; a classifier returns "
            "(N, classes) logits (one output tensor)"
        )
    return out.float()


def check_graph(model: nn.Module, input_shape: tuple[int, int, int], seed: int = 0) -> GraphChecks:
    """Run the checks of the module docstring on ``model`` (which takes [0, 1] pixels).

    Raises:
        ModelImportError: one check fails; the message says which and how to fix the export.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(CHECK_BATCH, *input_shape, generator=generator)
    first = _logits(model, x, "a batch")
    again = _logits(model, x, "a batch")
    scale = max(1.0, float(first.abs().max()))
    repeat = float((first - again).abs().max())
    if not repeat <= EVAL_RTOL * scale:
        raise ModelImportError(
            f"the same input gives logits differing by {repeat:.3g} on two runs: dropout (or "
            f"another random layer) is still active; {RE_EXPORT}"
        )
    parts = torch.cat([_logits(model, x[:1], "one image"), _logits(model, x[1:4], "a batch")])
    batch = float((parts - first[:4]).abs().max())
    if not batch <= EVAL_RTOL * scale:
        raise ModelImportError(
            f"an input's logits change by {batch:.3g} with the rest of its batch: BatchNorm "
            f"uses batch statistics (train mode); {RE_EXPORT}"
        )
    x_in = x[:2].clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(x_in).sum(), x_in)
    except RuntimeError as err:
        raise ModelImportError(
            f"no input gradient can be taken through the model ({str(err)[:300]}); the trust "
            "score needs one"
        ) from err
    finite = bool(torch.isfinite(grad).all())
    if not finite:
        raise ModelImportError("the model's input gradients are not finite on random inputs")
    return GraphChecks(
        num_classes=int(first.shape[1]),
        repeat_max_diff=repeat,
        batch_max_diff=batch,
        gradient_finite=finite,
    )


def read_labels(path: Path, num_classes: int) -> tuple[str, ...]:
    """Class names from a text file, one a line (blank lines skipped).

    Raises:
        ModelImportError: unreadable, or not ``num_classes`` names, or names repeated.
    """
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise ModelImportError(f"{path}: cannot read the labels file ({err})") from err
    names = [n for n in names if n]
    if len(names) != num_classes:
        raise ModelImportError(
            f"{path}: {len(names)} class names, but the model outputs {num_classes} logits; "
            "give one name per output, in output order"
        )
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ModelImportError(f"{path}: class names repeated: {repeated}")
    return tuple(names)
