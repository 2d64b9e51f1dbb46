"""The intermediate features of a classifier's blocks, which the ``blocks`` trust view reads.

A *block* ends where the network leaves a spatial resolution. The block's feature is the output
of the last layer that runs at that resolution, averaged over space to one value per channel.
Lee et al. (2018) pool the same way before their per-layer Mahalanobis scores.

The blocks are found by watching one forward pass, with no per-architecture list. Every leaf
module's 4-D output is recorded in call order. Runs of equal height and width are grouped, and
the last output of each run is kept. This works for the zoo (LeNet: both convolutions and their
pools; the compact CNN: each stage before its pooling; ResNet-20: each of its three stages) and
for imported graphs made of modules (onnx2torch's conversions). Leaf modules that run before the
first module with parameters are skipped: they only see the input itself (``Normalize``).

A model without 4-D leaf outputs (an MLP, a ``torch.export`` graph of bare functions, or a
TorchScript graph, whose modules take no hooks) has no blocks. The service then serves it
without the view.
"""

import threading
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# Past this, only the deepest blocks are kept: a 224 x 224 photo model has five resolutions, and
# an exotic graph could have dozens of resolution changes.
MAX_BLOCKS = 6


@dataclass
class _Record:
    """One 4-D leaf output: its spatial size and its channel means (B, C)."""

    size: tuple[int, int]
    means: Tensor


def leaf_modules(model: nn.Module) -> list[nn.Module]:
    """The leaf modules that run after the first one holding parameters, in definition order.

    Definition order only decides which modules get a hook; the blocks follow call order.
    """
    # TorchScript modules take no Python hooks: a scripted graph has no blocks here.
    leaves = [
        m
        for m in model.modules()
        if next(m.children(), None) is None and not isinstance(m, torch.jit.ScriptModule)
    ]
    first = next((i for i, m in enumerate(leaves) if next(m.parameters(), None) is not None), None)
    return [] if first is None else leaves[first:]


def block_features(model: nn.Module, x: Tensor, *, grad: bool = False) -> tuple[Tensor, ...]:
    """The channel means of each block's output (B, C_b), shallowest first (``MAX_BLOCKS`` at most).

    One forward pass without gradients. Hooks are registered on the shared model for the length
    of the call. Each hook records only in the thread that registered it: another thread's
    forward pass through the same model (the engine's gradients, a second request) leaves no
    trace here.

    Args:
        model: a classifier in eval mode.
        x: its input batch (B, C, H, W).
        grad: keep the graph, so the features are differentiable in ``x`` (an attack on the
            ``blocks`` view); the engine leaves it off.

    Returns:
        One (B, C_b) float tensor per block. The tuple is empty for a model without blocks.
    """
    owner = threading.get_ident()
    records: list[_Record] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if threading.get_ident() != owner or not isinstance(output, Tensor):
            return
        if output.dim() == 4 and output.shape[0] == x.shape[0]:
            records.append(_Record(tuple(output.shape[2:]), output.float().mean(dim=(2, 3))))

    handles = [m.register_forward_hook(record) for m in leaf_modules(model)]
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return _block_ends(records)


def _block_ends(records: list[_Record]) -> tuple[Tensor, ...]:
    """The last record of each run of equal spatial size, the deepest ``MAX_BLOCKS``."""
    ends = [
        r for i, r in enumerate(records) if i + 1 == len(records) or records[i + 1].size != r.size
    ]
    return tuple(r.means for r in ends[-MAX_BLOCKS:])


def has_blocks(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether ``model`` has blocks (see the module docstring), probed with one zero input.

    Args:
        model: a classifier in eval mode.
        input_shape: (C, H, W) of one input.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return bool(block_features(model, torch.zeros(1, *input_shape, device=device)))
