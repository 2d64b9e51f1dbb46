"""The gradient engine against the literal reference, closed forms, and its contracts."""

import logging
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from detectors.engine import EngineOptions, GradientEngine
from detectors.features import gga_features
from detectors.strategies import STRATEGIES
from models.architectures import build_model
from models.data import load_dataset
from models.repository import ModelRepository
from tests.detectors import reference_gga
from tests.helpers.models import TinyCNN, TinyLinear, seeded
from tests.helpers.threads import one_thread  # noqa: F401 (autouse fixture)

STRATEGY_NAMES = sorted(STRATEGIES)
N_IMAGES = 6
NEAR_ZERO = 1e-7  # a gradient component this close to zero may change sign with rounding

# Random-weight stand-ins for zoo models not trained yet: (architecture, data set).
FALLBACKS = {"lenet": "mnist", "compact-cnn": "fashion-mnist", "resnet": "cifar10"}


def _model_cases() -> list[str]:
    """Every zoo model, plus random-weight architectures the zoo does not cover yet."""
    try:
        names = ModelRepository().names()
    except LookupError:
        names = []
    cases = [f"zoo:{n}" for n in names]
    covered = {ModelRepository().card(n).architecture for n in names} if names else set()
    cases += [f"random:{a}" for a in FALLBACKS if a not in covered]
    return cases


_IMAGES: dict[tuple[str, int], torch.Tensor] = {}


def _images(data_dir: Path, dataset: str, n: int) -> torch.Tensor:
    if (dataset, n) not in _IMAGES:
        _IMAGES[(dataset, n)] = load_dataset(dataset, "test", data_dir=data_dir, limit=n).float()
    return _IMAGES[(dataset, n)]


def _model_and_images(
    case: str, data_dir: Path, n: int = N_IMAGES
) -> tuple[nn.Module, torch.Tensor]:
    kind, name = case.split(":")
    if kind == "zoo":
        loaded = ModelRepository().load(name)
        return loaded.module, _images(data_dir, loaded.card.dataset, n)
    torch.manual_seed(0)
    return build_model(name, {}), _images(data_dir, FALLBACKS[name], n)


def _reference(model: nn.Module, x: torch.Tensor, **flags) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference CSM and per-input gradients (C, B, ...) (its batch-mean loss undone)."""
    csm, grads = reference_gga.cosine_similarity_maps(model, x, return_gradients=True, **flags)
    return csm, grads * x.shape[0]


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("case", _model_cases())
def test_every_strategy_matches_the_reference_on_real_images(case, strategy, shared_data_dir):
    model, x = _model_and_images(case, shared_data_dir)
    ref_csm, ref_grads = _reference(model, x)  # (B, C, C), (C, B, Ch, H, W)
    ref_grads = ref_grads.transpose(0, 1).flatten(2)  # (B, C, Ch*H*W)

    raw = GradientEngine(model, EngineOptions(sign=False, channel_max=False, strategy=strategy))
    grads = raw(x).saliency
    scale = ref_grads.abs().amax(dim=2, keepdim=True)
    assert torch.all((grads - ref_grads).abs() <= 1e-5 * scale + 1e-5 * ref_grads.abs())

    # Signs may differ only where a component is within NEAR_ZERO of zero (a rounding coin
    # toss); CSMs and features must agree on every input whose signs all agree.
    flipped = torch.sign(grads) != torch.sign(ref_grads)
    assert torch.all(ref_grads.abs()[flipped] < NEAR_ZERO)
    keep = ~flipped.flatten(1).any(dim=1)
    assert keep.sum() >= x.shape[0] // 2, "too few inputs without sign flips to compare"
    out = GradientEngine(model, EngineOptions(strategy=strategy))(x)
    torch.testing.assert_close(out.csm[keep], ref_csm[keep], rtol=1e-5, atol=1e-5)
    ref_features = gga_features(ref_csm, out.predicted)
    torch.testing.assert_close(out.features[keep], ref_features[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.predicted, model(x).argmax(dim=1))


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_linear_model_gradients_equal_the_closed_form(strategy, rescale):
    model = seeded(TinyLinear, seed=1, in_shape=(2, 4, 4), num_classes=6)
    x = torch.rand(5, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    opts = EngineOptions(rescale_logits=rescale, sign=False, channel_max=False, strategy=strategy)
    out = GradientEngine(model, opts)(x)

    # W^T dCE(r(z), i)/dz, with the cotangent from float64 autograd through the rescaling.
    w = model.fc.weight.detach().double()  # (C, D)
    z = (x.flatten(1).double() @ w.T + model.fc.bias.detach().double()).requires_grad_()
    zz = 10 * z / z.abs().max(dim=1, keepdim=True).values if rescale else z
    expected = torch.stack(
        [
            torch.autograd.grad(
                nn.functional.cross_entropy(zz, torch.full((5,), i), reduction="sum"),
                z,
                retain_graph=True,
            )[0]
            @ w
            for i in range(6)
        ],
        dim=1,
    )  # (B, C, D)
    # The engine works in float32; dividing by max |z| makes the rescaled maps' rounding reach a
    # few 1e-5 relative on some CPUs. A wrong formula is off by order 1.
    scale = float(expected.abs().max())
    torch.testing.assert_close(out.saliency.double(), expected, rtol=1e-4, atol=1e-5 * scale)


def test_an_input_gives_the_same_result_alone_and_in_a_batch_of_64(shared_data_dir):
    torch.manual_seed(3)
    # BatchNorm: in train mode the batch would mix. Four classes keep the test fast.
    model = build_model("resnet", {"num_classes": 4})
    x = _images(shared_data_dir, "cifar10", 64)
    in_batch = GradientEngine(model, EngineOptions(strategy="batched"))(x)
    alone_engine = GradientEngine(model, EngineOptions(strategy="replicate"))
    for i in (0, 37):
        alone = alone_engine(x[i : i + 1])
        torch.testing.assert_close(alone.logits[0], in_batch.logits[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(alone.csm[0], in_batch.csm[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(alone.features[0], in_batch.features[i], rtol=1e-5, atol=1e-5)


def test_a_model_switched_to_train_mode_is_refused():
    model = build_model("resnet", {"num_classes": 3})
    engine = GradientEngine(model)
    model.train()
    with pytest.raises(RuntimeError, match=r"model.eval\(\)"):
        engine(torch.rand(2, 3, 32, 32))


def test_the_engine_puts_the_model_in_eval_mode():
    model = build_model("compact-cnn", {}).train()
    GradientEngine(model)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("strategy", ["batched", "replicate"])
def test_top_n_equals_the_rows_and_columns_of_the_full_computation(strategy):
    model = seeded(TinyCNN, seed=4, in_channels=3, num_classes=10, side=8)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    full = GradientEngine(model, EngineOptions(strategy=strategy))(x)
    top = GradientEngine(model, EngineOptions(top_n=4, strategy=strategy))(x)

    expected_classes = full.probabilities.argsort(dim=1, descending=True)[:, :4]
    torch.testing.assert_close(top.classes, expected_classes)
    assert torch.equal(top.classes[:, 0], full.predicted)
    for b in range(4):
        rows = top.classes[b]
        torch.testing.assert_close(top.saliency[b], full.saliency[b, rows])
        torch.testing.assert_close(top.csm[b], full.csm[b][rows][:, rows])
    first_row = torch.zeros(4, dtype=torch.int64)
    torch.testing.assert_close(top.features, gga_features(top.csm, first_row))
    assert top.saliency.shape == (4, 4, 64) and top.csm.shape == (4, 4, 4)
    # top_n beyond C: every class, still most probable first.
    wide = GradientEngine(model, EngineOptions(top_n=12, strategy=strategy))(x)
    torch.testing.assert_close(wide.classes, full.probabilities.argsort(dim=1, descending=True))
    torch.testing.assert_close(wide.features, full.features)


class _ColourLinear(nn.Module):
    """z = W x on a 3x2x2 colour image with a known gradient pattern per class.

    Class i's weights are +1 in channel 0 and -1 in channel 1 at pixel i, and zero elsewhere,
    times ``gain`` (large gains saturate the softmax: the gradient masking rescaling undoes).
    """

    def __init__(self, gain: float) -> None:
        super().__init__()
        w = torch.zeros(4, 3, 2, 2)
        for i in range(4):
            w[i, 0].view(-1)[i] = 1.0
            w[i, 1].view(-1)[i] = -1.0
        self.register_buffer("w", w.flatten(1) * gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def test_channel_max_and_rescaling_switches_behave_like_the_reference():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0] = 1.0  # z = (200, 0, 0, 0): class 0 wins by a wide margin
    model = _ColourLinear(gain=200.0)

    # Without rescaling the softmax saturates in float32 (p = (1, 0, 0, 0) exactly): the
    # predicted class's gradient is 0, so its map is all zero (defined CSM: 1 on the diagonal,
    # 0 elsewhere; no NaN), and class i's cotangent is e_0 - e_i: pixels 0 and i only.
    plain = GradientEngine(model, EngineOptions(rescale_logits=False))(x)
    assert torch.all(plain.saliency[0, 0] == 0)
    assert torch.equal(plain.saliency[0, 1], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(plain.csm[0, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    with pytest.raises(FloatingPointError):  # the reference has no answer here
        reference_gga.cosine_similarity_maps(model, x, rescale=False)

    # With rescaling (the default) the softmax no longer saturates: every class, the predicted
    # one included, gets a non-zero map, and the CSM equals the reference's.
    x[0, 0, 0, 1] = 0.5  # z = (200, 100, 0, 0): no exact cancellation in the chain rule
    out = GradientEngine(model)(x)
    assert torch.all(out.saliency[0].abs().sum(dim=1) > 0)
    torch.testing.assert_close(out.csm, reference_gga.cosine_similarity_maps(model, x))

    # Channel max: channel 0 of class i's gradient carries sign(v_j) at pixel j and channel 1
    # the opposite, channel 2 nothing; the max over channels is |sign(v_j)|. Without it the
    # three channels stay apart (D = 12), and either way the CSM is the reference's.
    no_max = GradientEngine(model, EngineOptions(channel_max=False))(x)
    assert no_max.saliency.shape == (1, 4, 12) and out.saliency.shape == (1, 4, 4)
    channels = no_max.saliency[0].view(4, 3, 4)  # (K, colour, pixel)
    assert torch.equal(channels[:, 1], -channels[:, 0]) and torch.all(channels[:, 2] == 0)
    assert (channels[:, 0] == -1).any() and (channels[:, 0] == 1).any()
    assert torch.equal(out.saliency[0], channels[:, 0].abs())
    ref = reference_gga.cosine_similarity_maps(model, x, channel_max=False)
    torch.testing.assert_close(no_max.csm, ref)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_no_parameter_gradient_is_written(strategy):
    model = build_model("lenet", {})  # fresh: its parameters require grad
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    GradientEngine(model, EngineOptions(strategy=strategy))(torch.rand(3, 1, 28, 28))
    assert all(p.grad is None for p in model.parameters())


def test_two_threads_on_one_model_get_the_right_answers():
    model = seeded(TinyCNN, seed=6, num_classes=10, side=12, in_channels=1)
    engine = GradientEngine(model, EngineOptions(strategy="batched"))
    gen = torch.Generator().manual_seed(7)
    inputs = [torch.rand(4, 1, 12, 12, generator=gen) for _ in range(2)]
    expected = [engine(x).features for x in inputs]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            results[i].append(engine(inputs[i]).features)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(results[i]) == 20
        for got in results[i]:
            torch.testing.assert_close(got, expected[i])


def test_warmup_tunes_per_bucket_and_remembers_the_choice(caplog):
    model = seeded(TinyCNN, seed=8, num_classes=5, side=8, in_channels=1)
    engine = GradientEngine(model, tuning_repeats=1)
    with caplog.at_level(logging.INFO, logger="detectors.autotune"):
        chosen = engine.warmup((1, 8, 8), batch_sizes=(1, 3, 4))
    assert set(chosen) == {1, 4}  # 3 and 4 share the bucket 4
    assert all(name in STRATEGIES for name in chosen.values())
    assert engine.strategy_for(3) == chosen[4] and engine.strategy_for(1) == chosen[1]
    assert set(engine.tuning_timings(4)) <= set(STRATEGIES)
    assert sum("batch bucket" in r.message for r in caplog.records) == 2
    out = engine(torch.rand(3, 1, 8, 8))
    assert out.strategy == chosen[4]


def test_an_untuned_bucket_is_tuned_on_first_use():
    model = seeded(TinyCNN, seed=8, num_classes=5, side=8, in_channels=1)
    engine = GradientEngine(model, tuning_repeats=1)
    out = engine(torch.rand(2, 1, 8, 8))
    assert engine.tuning_timings(2) and out.strategy == engine.strategy_for(2)


def test_a_slow_strategy_is_timed_once_not_repeats_times(monkeypatch):
    import time

    from detectors import autotune

    runs = {"fast": 0, "slow": 0}

    def run(name: str) -> None:
        runs[name] += 1
        time.sleep(0.002 if name == "fast" else 0.03)

    monkeypatch.setattr(autotune, "SLOW_RUN_S", 0.01)
    tuner = autotune.AutoTuner(torch.device("cpu"), repeats=3)
    assert tuner.tune(4, ["fast", "slow"], run) == "fast"
    assert runs == {"fast": 2, "slow": 2}  # the untimed first run and one timed round
    runs.update(fast=0, slow=0)
    assert tuner.tune(8, ["fast"], run) == "fast"
    assert runs == {"fast": 4, "slow": 0}  # quick: the first run and three timed rounds


class _NumpyScaled(nn.Module):
    """Scales its input by a number read through numpy, which no functional transform allows:
    ``torch.func.vjp`` (the ``vmap`` strategy) fails on it, plain autograd does not."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.detach().numpy().max()) + 1.0
        return self.linear(x.flatten(1) / scale)


def test_a_strategy_that_fails_on_the_model_is_skipped_with_a_log_line(caplog):
    torch.manual_seed(0)
    engine = GradientEngine(_NumpyScaled().eval(), tuning_repeats=1)
    with caplog.at_level(logging.INFO, logger="detectors.autotune"):
        chosen = engine.warmup((1, 4, 4), batch_sizes=(1, 4))
    assert "vmap" not in chosen.values() and "vmap" not in engine.tuning_timings(4)
    skipped = [r for r in caplog.records if "vmap fails" in r.message]
    assert len(skipped) == 2 and all(r.levelno == logging.WARNING for r in skipped)
    x = torch.rand(4, 1, 4, 4)
    out = engine(x)
    reference = GradientEngine(_NumpyScaled().eval(), EngineOptions(strategy="loop"))
    reference.model.load_state_dict(engine.model.state_dict())
    torch.testing.assert_close(out.csm, reference(x).csm)


def test_a_forced_strategy_overrides_the_tuner():
    model = seeded(TinyCNN, seed=8, num_classes=5, side=8, in_channels=1)
    engine = GradientEngine(model, EngineOptions(strategy="loop"))
    assert engine.warmup((1, 8, 8), batch_sizes=(1, 8)) == {1: "loop", 8: "loop"}
    assert engine(torch.rand(1, 1, 8, 8)).strategy == "loop"


def test_output_shapes_and_types():
    model = seeded(TinyCNN, seed=9, in_channels=3, num_classes=7, side=8)
    out = GradientEngine(model)(torch.rand(2, 3, 8, 8))
    assert out.logits.shape == out.probabilities.shape == (2, 7)
    assert out.predicted.dtype == out.classes.dtype == torch.int64
    assert torch.equal(out.classes, torch.arange(7).expand(2, 7))
    assert out.saliency.shape == (2, 7, 64) and out.saliency.dtype == torch.float32
    assert set(out.saliency.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert out.csm.shape == (2, 7, 7) and out.features.shape == (2, 10)
    assert out.features.dtype == torch.float32
    torch.testing.assert_close(out.probabilities.sum(dim=1), torch.ones(2))


def test_bad_options_and_inputs_are_refused_with_the_remedy():
    with pytest.raises(ValueError, match="one of: batched"):
        EngineOptions(strategy="fastest")
    with pytest.raises(ValueError, match="top_n"):
        EngineOptions(top_n=0)
    engine = GradientEngine(seeded(TinyLinear, in_shape=(1, 8, 8), num_classes=5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        engine(torch.rand(1, 8, 8))
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"outside torch\.inference"):
        engine(torch.rand(1, 1, 8, 8))
    with torch.no_grad():  # the engine turns autograd back on for itself
        assert engine(torch.rand(1, 1, 8, 8)).features.shape == (1, 10)
    with torch.inference_mode():
        made_in_inference = torch.rand(1, 1, 8, 8)
    assert engine(made_in_inference).features.shape == (1, 10)
