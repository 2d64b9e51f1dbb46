"""GGA at a block: saliency taken at one block's output activation, so the backward stops there.

``EngineOptions.saliency_layer = i`` makes the engine's K rows ``grad_a CE(r(F(x)), k)``, with
``a`` the output of block ``i`` instead of the input ``x``. The blocks are those of
``models.blocks`` (the last leaf-module output at each spatial resolution, after the first
layer with weights, shallowest first, at most ``MAX_BLOCKS``), so index ``i`` names the same
tensor whose channel means the ``blocks`` view reads. The layers before the cut (the *prefix*)
then run without autograd: their graph is neither recorded nor differentiated, which is the
saving; only the *tail* after the cut is.

The model is cut without knowing its code. One probe forward records, in call order, which leaf
module made each 4-D output and the how-many-th call of that module it was (LeNet calls one
pooling module twice), and the cut is that call (``BlockCut.find``). A forward through the cut
(``BlockCut.run``) runs the model under ``torch.no_grad()``; a forward hook on that module, at
that call, swaps its output for another tensor (a leaf that requires grad, or the point
``torch.func`` differentiates at) and turns autograd on for the rest of the forward. Values the
tail reads from the prefix besides ``a`` (a residual shortcut of an earlier layer) are constants
of the tail, so a row is the partial derivative autograd gives for ``a`` in the whole graph
(tested against it). Like ``models.blocks``, hooks act only in the thread that registered them:
another request's forward through the same model is left alone.

A model without blocks (an MLP, a ``torch.export`` graph of bare functions, TorchScript, whose
modules take no hooks) cannot be cut: ``BlockCut.find`` says so with a ``ValueError``.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.blocks import MAX_BLOCKS, leaf_modules
from models.penultimate import logits_and_features


class _Stop(Exception):
    """Ends a forward at the cut: ``BlockCut.activation`` holds what it needs (not an error)."""


@dataclass(frozen=True, eq=False)
class _Call:
    """One leaf-module call of the probe forward."""

    module: nn.Module
    call: int  # how many calls of ``module`` came before this one in the forward
    shape: tuple[int, ...]  # one input's output shape, () for a non-tensor output
    bytes_per_input: int
    spatial: bool  # a 4-D output of the batch's size: a candidate block end


@dataclass(frozen=True, eq=False)
class BlockCut:
    """Where the backward pass stops: one call of one leaf module of a model.

    Attributes:
        index: the block's index (``models.blocks`` order, shallowest first).
        num_blocks: how many blocks the model has.
        module: the leaf module whose output is the block's output.
        call: which call of ``module`` in one forward (0 = its first).
        shape: (C_a, H_a, W_a) of one input's activation.
        prefix_peak: bytes per input of the largest leaf output before the cut (the prefix runs
            without a graph, so at most a layer's input and output are alive at a time, plus a
            skip connection's).
    """

    index: int
    num_blocks: int
    module: nn.Module
    call: int
    shape: tuple[int, ...]
    prefix_peak: int

    @classmethod
    def find(cls, model: nn.Module, x: Tensor, index: int) -> "BlockCut":
        """The cut at block ``index`` of ``model``, found with one forward of ``x`` (no grad).

        Args:
            model: a classifier in eval mode.
            x: an input batch (B, C, H, W) of the size the engine will see.
            index: the block, shallowest first.

        Raises:
            ValueError: the model has no blocks, or ``index`` is out of range.
        """
        calls = _probe(model, x)
        spatial = [i for i, c in enumerate(calls) if c.spatial]  # positions in ``calls``
        # The last 4-D output of each run of equal height and width, as models.blocks keeps.
        ends = [
            p
            for j, p in enumerate(spatial)
            if j + 1 == len(spatial) or calls[spatial[j + 1]].shape[1:] != calls[p].shape[1:]
        ][-MAX_BLOCKS:]
        name = type(model).__name__
        if not ends:
            raise ValueError(
                f"saliency_layer={index} needs the model's blocks (models/blocks.py), and "
                f"{name} has none: none of its layers is a module with a 4-D output (an MLP, "
                "a torch.export graph of bare functions or a TorchScript graph); use "
                "saliency_layer=None (the input)"
            )
        if not 0 <= index < len(ends):
            raise ValueError(
                f"saliency_layer={index} is out of range: {name} has {len(ends)} blocks at this "
                f"input size (0 to {len(ends) - 1}, shallowest first); use one of those or None "
                "(the input)"
            )
        position = ends[index]
        end = calls[position]
        peak = max((c.bytes_per_input for c in calls[:position]), default=0)
        return cls(index, len(ends), end.module, end.call, end.shape, peak)

    def run(
        self, model: nn.Module, x: Tensor, swap: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """Logits and penultimate features of ``x`` with the cut's output replaced by ``swap``.

        The prefix runs under ``torch.no_grad()``; from the cut on, autograd records (the tail's
        graph reaches the swapped-in tensor, never ``x``).

        Args:
            model: the classifier the cut was found on.
            x: its input batch.
            swap: gets the activation (no graph) and returns the tensor the tail runs on.

        Returns:
            ``(logits, features)`` as ``models.penultimate.logits_and_features`` gives them.

        Raises:
            RuntimeError: the forward never reached the cut (a model whose calls depend on the
                input).
        """
        owner = threading.get_ident()
        seen = 0
        swapped = False

        def hook(module: nn.Module, inputs: object, output: object) -> Tensor | None:
            nonlocal seen, swapped
            if threading.get_ident() != owner:
                return None
            seen += 1
            if seen - 1 != self.call or not isinstance(output, Tensor):
                return None
            swapped = True
            torch.set_grad_enabled(True)  # the tail records; no_grad's exit restores the mode
            return swap(output)

        handle = self.module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits, features = logits_and_features(model, x)
        finally:
            handle.remove()
        if not swapped:
            raise RuntimeError(
                f"the forward pass never reached block {self.index} of {type(model).__name__}; "
                "its layers run differently from the probe's: use saliency_layer=None"
            )
        return logits, features

    def forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """A leaf copy of the activation that requires grad, the logits on it, the features.

        The logits' graph holds the tail only; differentiate them with respect to the leaf.
        """
        leaves: list[Tensor] = []

        def leaf(output: Tensor) -> Tensor:
            leaves.append(output.detach().requires_grad_(True))
            return leaves[0]

        logits, features = self.run(model, x, leaf)
        return leaves[0], logits, None if features is None else features.detach()

    def activation(self, model: nn.Module, x: Tensor) -> Tensor:
        """The cut's activation of ``x`` (B, C_a, H_a, W_a), from the prefix alone, no graph."""
        held: list[Tensor] = []

        def stop(output: Tensor) -> Tensor:
            held.append(output.detach())
            raise _Stop

        try:
            self.run(model, x, stop)
        except _Stop:
            return held[0]
        raise RuntimeError("unreachable: the cut's hook stops the forward")  # pragma: no cover

    def saved_bytes(self, model: nn.Module, x: Tensor) -> int:
        """Bytes of the storages autograd saves for the tail's backward, plus the prefix's peak.

        ``detectors.memory`` measures the pass cost with it instead of the whole model's graph.
        """
        storages: dict[int, int] = {}

        def pack(tensor: Tensor) -> Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.forward(model, x)
        # A layer's input and output, and possibly a shortcut, are alive at once in the prefix.
        return sum(storages.values()) + 3 * self.prefix_peak * x.shape[0]


def _probe(model: nn.Module, x: Tensor) -> list[_Call]:
    """Every call of a leaf module (``models.blocks``' candidates) in one forward, in order."""
    owner = threading.get_ident()
    calls: list[_Call] = []
    counts: dict[int, int] = {}

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if threading.get_ident() != owner:
            return
        call = counts.get(id(module), 0)
        counts[id(module)] = call + 1
        if not isinstance(output, Tensor):
            calls.append(_Call(module, call, (), 0, False))
            return
        batch = x.shape[0]
        per_input = output.nbytes // batch if output.dim() > 0 else output.nbytes
        spatial = output.dim() == 4 and output.shape[0] == batch
        calls.append(_Call(module, call, tuple(output.shape[1:]), per_input, spatial))

    handles = [m.register_forward_hook(record) for m in leaf_modules(model)]
    try:
        with torch.no_grad():
            logits_and_features(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return calls
