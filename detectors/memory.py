"""Memory measured in bytes, not guessed from counts: what one input's backward pass holds.

A row count tuned on 28x28 inputs (``rows x batch <= 2048``) is 80 GB of activations for a
224x224 ResNet-18. So the engine measures, once per model and input size, the bytes autograd
saves for the backward pass of one input (``measure_pass_cost``), and sizes its batches and
its widened passes to a budget (``GGA_ENGINE_MEMORY_GB``, ``engine_memory_budget``).

The measurement counts what autograd keeps between the forward and the backward pass, through
``torch.autograd.graph.saved_tensors_hooks``, at batch 1 and batch 2: the difference is what
each input adds, the rest (weights saved by convolutions and linear layers) is shared. It is
exact for the graph and costs two forward passes; the backward's own transients (the gradient
of each activation, freed as it goes) are covered by counting every copy twice
(``Capacity``).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models.errors import GGAUserError

BUDGET_ENV = "GGA_ENGINE_MEMORY_GB"
# 2 GiB: a 2-core, 24 GB machine runs the service, a fit and the database beside it, and the
# widest pass a small model can use (all classes of a batch of 32) needs far less.
DEFAULT_BUDGET_GB = 2.0
_GIB = 1024**3


class MemoryBudgetError(GGAUserError):
    """The memory budget cannot hold the pass of a single input."""


@dataclass(frozen=True)
class PassCost:
    """Bytes autograd holds for the backward pass of a batch: ``shared + batch * per_input``.

    Attributes:
        per_input: bytes each input adds (its saved activations, the input itself included).
        shared: bytes saved once whatever the batch (weights saved for the backward pass).
    """

    per_input: int
    shared: int


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``model(x)``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


def measure_pass_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    saved: Callable[[nn.Module, torch.Tensor], int] = saved_bytes,
) -> PassCost:
    """Measure what one more input adds to the graph autograd keeps for the backward pass.

    Args:
        model: the classifier, in eval mode, on ``device``.
        input_shape: (C, H, W) of one input.
        device: where the model runs.
        saved: bytes a pass over a batch holds; default ``saved_bytes`` (the whole graph from
            the input). The engine passes ``BlockCut.saved_bytes`` for gradients taken at a
            block (``EngineOptions.saliency_layer``): the graph after the cut only.

    Returns:
        The ``PassCost``; ``per_input`` is at least the input's own bytes.
    """
    one = saved(model, torch.rand(1, *input_shape, device=device))
    two = saved(model, torch.rand(2, *input_shape, device=device))
    input_bytes = 4 * int(torch.Size(input_shape).numel())
    per_input = max(two - one, input_bytes)
    return PassCost(per_input=per_input, shared=max(one - per_input, 0))


def engine_memory_budget(gigabytes: float | None = None) -> int:
    """The engine's budget in bytes: ``gigabytes``, else ``GGA_ENGINE_MEMORY_GB``, else 2 GiB.

    Raises:
        MemoryBudgetError: the value is not a positive number.
    """
    if gigabytes is None:
        text = os.environ.get(BUDGET_ENV, "").strip()
        try:
            gigabytes = float(text) if text else DEFAULT_BUDGET_GB
        except ValueError as err:
            raise MemoryBudgetError(f"{BUDGET_ENV}={text!r} is not a number of GB") from err
    if not gigabytes > 0:
        raise MemoryBudgetError(f"the engine's memory budget must be positive, got {gigabytes} GB")
    return int(gigabytes * _GIB)


def _gb(n: float) -> str:
    return f"{n / _GIB:.3g} GB"


@dataclass(frozen=True)
class Capacity:
    """How many inputs, and how many widened copies of them, fit a byte budget.

    A call on ``batch`` inputs keeps their graph (``batch`` copies of the saved activations)
    and widens it to ``rows x batch`` copies for the vectorised backward or the replicated
    forward; each copy is counted twice, for the gradients that flow back through it.

    Attributes:
        budget: the budget in bytes.
        cost: the measured ``PassCost``.
    """

    budget: int
    cost: PassCost

    def __post_init__(self) -> None:
        if self.copies < 3:
            need = self.cost.shared + 3 * self.cost.per_input
            raise MemoryBudgetError(
                f"the engine's memory budget of {_gb(self.budget)} cannot hold the gradient "
                f"pass of one input, which needs about {_gb(need)} on this model and input "
                f"size; raise {BUDGET_ENV} to at least {need / _GIB:.2f}"
            )

    @property
    def copies(self) -> int:
        """Copies of one input's saved activations the budget holds."""
        return max(0, self.budget - self.cost.shared) // max(self.cost.per_input, 1)

    @property
    def max_batch(self) -> int:
        """Most inputs in one engine pass: their graph plus one widened row of each, twice.

        A power of two, so that a chunk of a larger batch is exactly an auto-tuner bucket.
        """
        return 1 << ((self.copies // 3).bit_length() - 1)

    def max_rows_times_batch(self, batch: int) -> int:
        """Bound on rows x batch of a widened pass over ``batch`` (<= ``max_batch``) inputs."""
        return max(batch, (self.copies - batch) // 2)

    def describe(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{_gb(self.cost.per_input)} saved per input ({_gb(self.cost.shared)} shared): "
            f"at most {self.max_batch} inputs per pass within {_gb(self.budget)}"
        )


def batch_within_budget(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    most: int = 128,
    budget: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[int, Capacity]:
    """Inputs per batch for the attacks and engine calls of a fit or an evaluation.

    An attack step holds one graph and its gradients (two copies per input), an engine call
    three (``Capacity.max_batch``): the smaller of that and ``most`` keeps both in the budget.

    Args:
        model: the classifier, in eval mode, on ``device``.
        input_shape: (C, H, W) of one input.
        most: the batch size used when memory is no constraint (the small zoo models).
        budget: bytes; default ``engine_memory_budget()``.
        device: where the model runs.

    Returns:
        The batch size and the ``Capacity`` it came from (for the log line).

    Raises:
        MemoryBudgetError: the budget cannot hold one input's pass.
    """
    budget = engine_memory_budget() if budget is None else budget
    capacity = Capacity(budget, measure_pass_cost(model, input_shape, device))
    return max(1, min(most, capacity.max_batch)), capacity
