"""GGA at a block (``EngineOptions.saliency_layer``): the maps against autograd at the block's
activation, every strategy alike, the backward stopping at the block, clear errors, and the
option's round trip through detector.json."""

import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from detectors.block_cut import BlockCut
from detectors.calibration import ConformalCalibrator
from detectors.engine import EngineOptions, GradientEngine
from detectors.fusion import SingleFusion
from detectors.memory import measure_pass_cost
from detectors.persistence import DETECTOR_FILE
from detectors.pipeline import FEATURE_OPTIONS, GGAPipeline, engine_options_dict
from detectors.saliency import rescale_logits
from detectors.strategies import STRATEGIES
from detectors.trust import TrustScorer
from detectors.tuning_cache import TuningCache
from detectors.views.gga import GGAPaperView
from models.architectures import build_model
from models.blocks import block_features
from tests.detectors.synthetic import view_inputs
from tests.helpers.models import TinyCNN, TinyLinear, seeded
from tests.helpers.threads import one_thread  # noqa: F401 (autouse fixture)

STRATEGY_NAMES = sorted(STRATEGIES)
# LeNet calls one pooling module twice (block 3 is its second call); ResNet-20's blocks end
# after a residual sum whose shortcut comes from the prefix.
ARCHITECTURES = {"lenet": (1, 28, 28), "compact-cnn": (1, 28, 28), "resnet": (3, 32, 32)}
SHA = "cd" * 32


_MODELS: dict[str, nn.Module] = {}


def _model(architecture: str) -> tuple[nn.Module, torch.Tensor]:
    """A random-weight zoo architecture (eval mode) and three inputs for it."""
    if architecture not in _MODELS:
        torch.manual_seed(0)
        _MODELS[architecture] = build_model(architecture, {}).eval()
    shape = ARCHITECTURES[architecture]
    return _MODELS[architecture], torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))


def _autograd_reference(model: nn.Module, x: torch.Tensor, cut: BlockCut) -> torch.Tensor:
    """(B, C, C_a, H_a, W_a): grad of each class's rescaled CE w.r.t. the hooked activation,
    taken in the whole graph (prefix included, x requiring grad), one class at a time."""
    held: list[torch.Tensor] = []
    calls = 0

    def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal calls
        if calls == cut.call:
            held.append(output)
        calls += 1

    handle = cut.module.register_forward_hook(keep)
    try:
        logits = model(x.clone().requires_grad_(True))
    finally:
        handle.remove()
    z = rescale_logits(logits)
    rows = []
    for k in range(z.shape[1]):
        loss = nn.functional.cross_entropy(z, torch.full((len(x),), k), reduction="sum")
        (g,) = torch.autograd.grad(loss, held[0], retain_graph=True)
        rows.append(g)
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_block_and_strategy_matches_autograd_at_the_activation(architecture):
    model, x = _model(architecture)
    blocks = block_features(model, x)
    for layer in range(len(blocks)):
        maps = {}
        for strategy in STRATEGY_NAMES:
            options = EngineOptions(
                saliency_layer=layer, sign=False, channel_max=False, strategy=strategy
            )
            engine = GradientEngine(model, options)
            maps[strategy] = engine(x).saliency
        cut = engine.cut(tuple(x.shape[1:]))
        assert cut is not None and cut.index == layer and cut.num_blocks == len(blocks)
        # The cut is the tensor models.blocks reads: same channel means.
        torch.testing.assert_close(cut.activation(model, x).mean(dim=(2, 3)), blocks[layer])
        reference = _autograd_reference(model, x, cut).flatten(2)
        assert maps["loop"].shape == (3, 10, int(np.prod(cut.shape)))
        # float32 throughout: replicate's wider batch sums in another order, and differs by up
        # to about 3e-6 on gradients as large as 3 (LeNet), so atol is 1e-5.
        for strategy, got in maps.items():
            torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4, msg=strategy)


def test_sign_maps_take_the_max_over_the_activations_channels():
    model, x = _model("compact-cnn")
    out = GradientEngine(model, EngineOptions(saliency_layer=1, strategy="batched"))(x)
    raw = GradientEngine(
        model, EngineOptions(saliency_layer=1, sign=False, channel_max=False, strategy="batched")
    )(x)
    c, h, w = (32, 14, 14)  # the second stage before its pool
    assert out.saliency.shape == (3, 10, h * w) and raw.saliency.shape == (3, 10, c * h * w)
    expected = torch.sign(raw.saliency).view(3, 10, c, h * w).amax(dim=2)
    torch.testing.assert_close(out.saliency, expected)
    assert out.csm.shape == (3, 10, 10) and out.features.shape == (3, 10)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_everything_but_the_maps_stays_the_inputs(strategy):
    model, x = _model("resnet")
    extras = {"squeeze": True, "blocks": True, "strategy": strategy}
    plain = GradientEngine(model, EngineOptions(**extras))(x)
    cut = GradientEngine(model, EngineOptions(saliency_layer=0, **extras))(x)
    for name in ("logits", "probabilities", "predicted", "classes", "penultimate", "squeezed"):
        assert torch.equal(getattr(cut, name), getattr(plain, name)), name
    for a, b in zip(cut.blocks, plain.blocks, strict=True):
        assert torch.equal(a, b)
    assert cut.saliency.shape == (3, 10, 32 * 32) and not torch.equal(cut.csm, plain.csm)


def test_the_input_stays_the_default():
    assert EngineOptions().saliency_layer is None
    model, x = _model("lenet")
    engine = GradientEngine(model, EngineOptions(strategy="loop"))
    assert engine.cut(tuple(x.shape[1:])) is None
    explicit = GradientEngine(model, EngineOptions(strategy="loop", saliency_layer=None))(x)
    out = engine(x)
    assert out.saliency.shape == (3, 10, 28 * 28)
    assert torch.equal(out.saliency, explicit.saliency) and torch.equal(out.csm, explicit.csm)


def test_the_backward_stops_at_the_block():
    model, x = _model("compact-cnn")
    cut = BlockCut.find(model, x, 1)
    prefix = model.features[0]  # the first convolution: before the cut
    tail = model.fc1
    needs_grad: dict[str, list[bool]] = {"prefix": [], "tail": []}
    handles = [
        prefix.register_forward_hook(lambda m, i, o: needs_grad["prefix"].append(o.requires_grad)),
        tail.register_forward_hook(lambda m, i, o: needs_grad["tail"].append(o.requires_grad)),
    ]
    try:
        x_in = x.clone().requires_grad_(True)
        leaf, logits, _ = cut.forward(model, x_in)
    finally:
        for handle in handles:
            handle.remove()
    assert needs_grad == {"prefix": [False], "tail": [True]}  # no graph before the cut
    assert leaf.is_leaf and leaf.shape == (3, 32, 14, 14)
    (at_x,) = torch.autograd.grad(logits.sum(), x_in, retain_graph=True, allow_unused=True)
    assert at_x is None  # the logits' graph never reaches the input
    (at_leaf,) = torch.autograd.grad(logits.sum(), leaf)
    assert at_leaf.abs().sum() > 0


def test_the_pass_cost_counts_the_tail_only():
    model, x = _model("resnet")
    shape = tuple(x.shape[1:])
    whole = measure_pass_cost(model, shape)
    deepest = BlockCut.find(model, x[:1], 2)
    tail = measure_pass_cost(model, shape, saved=deepest.saved_bytes)
    assert 0 < tail.per_input < whole.per_input / 4
    engine = GradientEngine(model, EngineOptions(saliency_layer=2))
    assert engine.capacity(shape).cost == tail


def test_block_index_out_of_range_says_how_many_there_are():
    model, x = _model("lenet")
    with pytest.raises(ValueError, match=r"saliency_layer=4 is out of range: LeNet has 4 blocks"):
        GradientEngine(model, EngineOptions(saliency_layer=4))(x)
    with pytest.raises(ValueError, match="block index >= 0"):
        EngineOptions(saliency_layer=-1)


def test_a_model_without_blocks_is_refused_with_the_reason():
    model = seeded(TinyLinear)
    with pytest.raises(ValueError, match=r"TinyLinear has none.*4-D output.*saliency_layer=None"):
        GradientEngine(model, EngineOptions(saliency_layer=0))(torch.rand(2, 1, 8, 8))


def test_another_threads_forward_is_not_cut():
    model, x = _model("compact-cnn")
    cut = BlockCut.find(model, x, 0)
    other = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = model(other)
    seen: list[torch.Tensor] = []

    def swap(output: torch.Tensor) -> torch.Tensor:
        # While the hook is on the shared model, another thread's forward runs through it.
        worker = threading.Thread(target=lambda: seen.append(model(other).detach()))
        worker.start()
        worker.join()
        return torch.zeros_like(output)

    cut.run(model, x, swap)
    torch.testing.assert_close(seen[0], expected)


def test_the_tuning_cache_key_tells_the_layers_apart():
    device = torch.device("cpu")

    def key(options: EngineOptions) -> str:
        return TuningCache.key(SHA, (1, 28, 28), options.to_dict(), device, 1 << 30)

    assert key(EngineOptions()) != key(EngineOptions(saliency_layer=0))
    assert key(EngineOptions(saliency_layer=0)) != key(EngineOptions(saliency_layer=1))


def _scorer(options: EngineOptions) -> TrustScorer:
    fit, cal = view_inputs(300, False, 0), view_inputs(100, False, 1)
    view = GGAPaperView(projections=20, bins=20).fit_features(fit)
    return TrustScorer(
        {view.name: view},
        {},
        SingleFusion((view.name,)),
        ConformalCalibrator(view.predict_features(cal)),
        0.05,
        engine_options_dict(options),
        "toy",
        SHA,
    )


def test_detector_json_keeps_the_layer_and_old_files_load_as_the_input(tmp_path):
    assert "saliency_layer" in FEATURE_OPTIONS  # a detector is served as it was fitted
    _scorer(EngineOptions(saliency_layer=0)).save(tmp_path)
    stored = json.loads((tmp_path / DETECTOR_FILE).read_text())
    assert stored["engine_options"]["saliency_layer"] == 0
    model = seeded(TinyCNN, side=8, num_classes=4)
    pipeline = GGAPipeline(model, TrustScorer.load(tmp_path, SHA))
    assert pipeline.options.saliency_layer == 0
    assert pipeline(torch.rand(2, 1, 8, 8), saliency=True).saliency.shape == (2, 4, 8 * 8)

    del stored["engine_options"]["saliency_layer"]  # as files before the option were written
    (tmp_path / DETECTOR_FILE).write_text(json.dumps(stored))
    assert GGAPipeline(model, TrustScorer.load(tmp_path, SHA)).options.saliency_layer is None
