"""Memory bounded in bytes: the measured cost of one input's pass, and the engine kept within
its budget by chunking the batch and narrowing the widened passes."""

import pytest
import torch
from torch import nn

from detectors.engine import EngineOptions, GradientEngine
from detectors.memory import (
    BUDGET_ENV,
    Capacity,
    MemoryBudgetError,
    PassCost,
    engine_memory_budget,
    measure_pass_cost,
)
from models.repository import ModelRepository
from tests.helpers.peak import peak_growth_mb

MB = 1024**2


def test_the_measured_cost_is_what_autograd_saves():
    d, h, c = 300, 50, 10
    model = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, c)).eval()
    cost = measure_pass_cost(model, (d,))
    # Per input: the input (saved by the first layer) and the hidden activation (saved by ReLU
    # and, the same storage, by the second layer). Shared: the two weight matrices.
    assert cost.per_input == 4 * (d + h)
    assert cost.shared == 4 * (d * h + h * c)


def test_capacity_and_a_budget_too_small_for_one_input():
    cost = PassCost(per_input=10 * MB, shared=20 * MB)
    capacity = Capacity(budget=1000 * MB, cost=cost)
    assert capacity.copies == 98 and capacity.max_batch == 32  # 98 // 3 = 32, a power of two
    assert capacity.max_rows_times_batch(32) == 33 and capacity.max_rows_times_batch(1) == 48
    with pytest.raises(
        MemoryBudgetError, match=r"budget of 0.0439 GB cannot hold .* needs about 0.0488 GB"
    ):
        Capacity(budget=45 * MB, cost=cost)


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert engine_memory_budget() == 2 * 1024**3
    monkeypatch.setenv(BUDGET_ENV, "0.5")
    assert engine_memory_budget() == 512 * MB
    for bad in ("lots", "0", "-1"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(MemoryBudgetError, match=BUDGET_ENV if bad == "lots" else "positive"):
            engine_memory_budget()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return ModelRepository().load("cifar10-resnet20").module.eval()


@pytest.mark.parametrize("strategy", ["batched", "replicate", "loop"])
def test_a_batch_over_the_budget_is_computed_in_chunks_with_the_same_result(resnet, strategy):
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    options = EngineOptions(strategy=strategy, squeeze=True, blocks=True)
    roomy = GradientEngine(resnet, options)(x)
    tight = GradientEngine(resnet, options, memory_budget=16 * MB)
    assert tight.capacity((3, 32, 32)).max_batch == 2  # 1.4 MB per input, 1 MB shared
    out = tight(x)
    assert out.strategy == strategy
    for name in ("logits", "classes", "saliency", "csm", "features", "squeezed"):
        torch.testing.assert_close(getattr(out, name), getattr(roomy, name), atol=1e-4, rtol=0)
    for ours, theirs in zip(out.blocks, roomy.blocks, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_a_budget_too_small_for_one_input_names_budget_and_need(resnet):
    engine = GradientEngine(resnet, memory_budget=2 * MB)
    with pytest.raises(MemoryBudgetError, match=r"0.00195 GB cannot hold .* raise GGA_ENGINE"):
        engine(torch.rand(1, 3, 32, 32))


ENGINE_SETUP = """
import sys, torch
torch.set_num_threads(1)
from detectors.engine import EngineOptions, GradientEngine
from models.repository import ModelRepository
from tests.helpers.peak import peak_growth_mb
model = ModelRepository().load("cifar10-resnet20").module.eval()
engine = GradientEngine(model, EngineOptions(strategy="replicate"), memory_budget=int(sys.argv[1]))
x = torch.rand(64, 3, 32, 32)
engine(x[:1])  # first-call costs (kernels, thread pools) are not what the budget bounds
"""


def _growth_mb(budget: int) -> int:
    return peak_growth_mb(ENGINE_SETUP, "engine(x)", str(budget))


def test_the_budget_bounds_the_real_peak_memory_of_a_call():
    # Replicating 64 inputs x 10 classes is 640 copies of ResNet-20's activations, about 1 GB.
    tight, roomy = _growth_mb(100 * MB), _growth_mb(2048 * MB)
    assert tight < 150, f"a call within a 100 MB budget grew the process by {tight} MB"
    assert roomy > 3 * tight, (tight, roomy)
