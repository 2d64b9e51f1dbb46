"""The GGA gradient engine: one call gives logits, all-class saliency maps, CSMs and features.

The hot path of the service. For a batch of B inputs and a model with C classes it computes the
K = C (or top-N) input gradients ``grad_x CE(F(x), i)`` from one forward pass as vector-Jacobian
products (``detectors.strategies``, the fastest picked by ``detectors.autotune``), turns them
into sign maps, and computes each input's cosine similarity matrix and its ten features. With
``EngineOptions.saliency_layer`` the gradients are taken at one block's output activation
instead, and the backward pass stops there (``detectors.block_cut``).

Defaults reproduce the reference code (mad-lab-fau/GGA-Identifying-Untrustworthy-Predictions,
``src/CSM.py``): logits rescaled to ``10 z / max_j |z_j|`` before the loss, sign, then a max over
colour channels. Unlike the reference, gradients are per input (the reference's batch-mean loss
scales them by 1/B, which the sign hides) and a zero map gives a defined CSM instead of NaN.

Example:
    >>> engine = GradientEngine(model)
    >>> engine.warmup((1, 28, 28))            # measures strategies per batch-size bucket
    >>> out = engine(x)                       # x: (B, 1, 28, 28) in [0, 1]
    >>> out.features                          # (B, 10), FEATURE_NAMES order
"""

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from detectors.autotune import AutoTuner, TuningCancelled, bucket_of
from detectors.block_cut import BlockCut
from detectors.csm import cosine_similarity_matrix
from detectors.features import gga_features
from detectors.memory import (
    Capacity,
    PassCost,
    engine_memory_budget,
    measure_pass_cost,
    saved_bytes,
)
from detectors.saliency import to_maps
from detectors.squeeze import squeezed_logits
from detectors.strategies import STRATEGIES, Plan, StrategyResult, get_strategy, worth_trying
from models.blocks import block_features

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How the saliency maps are made; every default is the reference behaviour.

    Attributes:
        rescale_logits: ``z <- 10 z / max_j |z_j|`` per input before the loss.
        sign: take the sign of the gradients.
        channel_max: max over colour channels after the sign (D = H*W instead of C*H*W).
        top_n: only the ``top_n`` most probable classes (most probable first); ``None`` = all.
        strategy: ``"auto"`` (measured per batch-size bucket) or a name in ``STRATEGIES``.
        squeeze: also run the model on each feature-squeezed copy of the input
            (``detectors.squeeze``; one forward each), for the ``squeeze`` view.
        blocks: also take the channel means of every block's output (``models.blocks``; one
            forward without gradients), for the ``blocks`` view.
        saliency_layer: take the K gradients with respect to the output activation of this
            block (``models.blocks`` order, shallowest first) instead of the input, so that the
            backward pass stops there (``detectors.block_cut``); sign, channel max (over the
            activation's channels), CSM and features follow unchanged. ``None``: the input,
            the reference. Logits, probabilities and every other output stay the input's.
    """

    rescale_logits: bool = True
    sign: bool = True
    channel_max: bool = True
    top_n: int | None = None
    strategy: str = "auto"
    squeeze: bool = False
    blocks: bool = False
    saliency_layer: int | None = None

    def __post_init__(self) -> None:
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n must be None (all classes) or at least 1, got {self.top_n}")
        if self.saliency_layer is not None and (
            isinstance(self.saliency_layer, bool)
            or not isinstance(self.saliency_layer, int)
            or self.saliency_layer < 0
        ):
            raise ValueError(
                "saliency_layer must be None (the input) or a block index >= 0 (shallowest "
                f"first, models/blocks.py), got {self.saliency_layer!r}"
            )
        if self.strategy != "auto":
            get_strategy(self.strategy)  # raises with the known names

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready fields (stored beside a fitted detector)."""
        return asdict(self)


@dataclass
class EngineOutput:
    """Everything one engine call computes for a batch of B inputs.

    Attributes:
        logits: (B, C) unscaled logits.
        probabilities: (B, C) softmax of the unscaled logits.
        predicted: (B,) int64 argmax.
        classes: (B, K) int64 class of each saliency row: all C in index order, or the top-N
            most probable first.
        saliency: (B, K, D) float32 maps (sign maps by default); with
            ``EngineOptions.saliency_layer``, maps of that block's activation.
        csm: (B, K, K) cosine similarity matrices.
        features: (B, 10) float32, ``detectors.features.FEATURE_NAMES`` order.
        strategy: the gradient strategy that computed this batch.
        penultimate: (B, F) penultimate features of the same forward pass, for a model that
            exposes them (``models.penultimate``), else ``None``.
        squeezed: (B, S, C) logits of the ``detectors.squeeze.SQUEEZERS`` copies, with
            ``EngineOptions.squeeze``, else ``None``.
        blocks: one (B, C_b) tensor of channel means per block (``models.blocks``), with
            ``EngineOptions.blocks``, else ``None``.
    """

    logits: Tensor
    probabilities: Tensor
    predicted: Tensor
    classes: Tensor
    saliency: Tensor
    csm: Tensor
    features: Tensor
    strategy: str = ""
    penultimate: Tensor | None = None
    squeezed: Tensor | None = None
    blocks: tuple[Tensor, ...] | None = None


def _concat(parts: list[EngineOutput]) -> EngineOutput:
    """One output from the outputs of consecutive chunks of a batch."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    first = parts[0]
    blocks = None
    if first.blocks is not None:
        blocks = tuple(torch.cat(chunk) for chunk in zip(*(p.blocks for p in parts), strict=True))
    strategies = dict.fromkeys(p.strategy for p in parts)  # in order, without repeats
    return EngineOutput(
        **{name: cat(name) for name in _BATCHED_FIELDS},
        strategy="+".join(strategies),
        blocks=blocks,
    )


_BATCHED_FIELDS = (
    "logits",
    "probabilities",
    "predicted",
    "classes",
    "saliency",
    "csm",
    "features",
    "penultimate",
    "squeezed",
)


def _default_strategy(bucket: int, device: torch.device) -> str:
    """What an untuned engine would use: replication at batch 1 on CPU, else the batched VJP."""
    return "replicate" if bucket == 1 and device.type == "cpu" else "batched"


class GradientEngine:
    """All-class input gradients, CSMs and GGA features for one model on one device.

    The model is moved to ``device`` and put in eval mode once, here; every call checks it is
    still in eval mode (BatchNorm or Dropout in train mode would make an input's result depend on
    the rest of its batch) and refuses otherwise rather than flipping a shared model back.
    Parameters are never written: gradients are taken with respect to the input only (or, with
    ``EngineOptions.saliency_layer``, a block's activation, and the backward stops there).

    Memory is bounded in bytes: the first call at an input size measures what one input's
    backward pass holds (``detectors.memory``); a larger batch is computed in consecutive
    chunks that fit ``memory_budget``, and the widened strategies take only as many rows at
    once as the rest of the budget holds.

    Calls are thread-safe: the only shared mutable state is the auto-tuner's cache (locked), the
    number of classes and the measured capacity per input size, each learnt once under a lock.

    Args:
        model: classifier taking (B, C, H, W) pixels in [0, 1] and returning (B, classes) logits.
        options: see ``EngineOptions``.
        device: where to compute; default: the device of the model's parameters (CPU if none).
        tuning_repeats: timed runs per strategy when auto-tuning.
        memory_budget: bytes one call may hold for its gradient passes; default
            ``GGA_ENGINE_MEMORY_GB`` (``detectors.memory.engine_memory_budget``).
        tune_on_first_call: measure the strategies the first time a call meets an untuned
            bucket (the lab's default); False keeps the default strategy there instead, for a
            server that tunes in the background and must never stall a request on it.

    Raises:
        ValueError: bad options (unknown strategy, top_n < 1); at the first call at an input
            size, a ``saliency_layer`` the model has no block for.
        MemoryBudgetError: a bad budget now, or (at the first call at an input size) a budget
            too small for the pass of one input.
    """

    def __init__(
        self,
        model: nn.Module,
        options: EngineOptions = EngineOptions(),
        device: torch.device | str | None = None,
        tuning_repeats: int = 3,
        memory_budget: int | None = None,
        tune_on_first_call: bool = True,
    ) -> None:
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.options = options
        self.model = model.to(self.device).eval()
        # Listed once: the per-call eval-mode check then costs a short scan, not a tree walk.
        self._modules = tuple(self.model.named_modules())
        self._tuner = AutoTuner(self.device, tuning_repeats, label=type(model).__name__)
        self._lock = threading.Lock()
        self._num_classes: int | None = None
        self.tune_on_first_call = tune_on_first_call
        self.memory_budget = engine_memory_budget() if memory_budget is None else memory_budget
        self._capacity: dict[tuple[int, ...], Capacity] = {}
        self._cuts: dict[tuple[int, ...], BlockCut | None] = {}
        self._cut_lock = threading.Lock()

    def capacity(self, input_shape: tuple[int, ...]) -> Capacity:
        """What the memory budget holds at this input size, measured on the first ask.

        Args:
            input_shape: (C, H, W) of one input.

        Raises:
            MemoryBudgetError: the budget cannot hold the pass of one input.
        """
        key = tuple(int(d) for d in input_shape)
        if key not in self._capacity:
            with self._lock:
                if key not in self._capacity:
                    self._capacity[key] = Capacity(self.memory_budget, self._measure(key))
                    logger.info(
                        "engine memory for %s at %s: %s",
                        type(self.model).__name__,
                        "x".join(map(str, key)),
                        self._capacity[key].describe(),
                    )
        return self._capacity[key]

    def _measure(self, input_shape: tuple[int, ...]) -> PassCost:
        self._check_eval()
        cut = self.cut(input_shape)
        # At a cut, the tail's graph and the prefix's largest activations (no graph there).
        saved = saved_bytes if cut is None else cut.saved_bytes
        try:
            return measure_pass_cost(self.model, input_shape, self.device, saved=saved)
        except RuntimeError:
            # A graph exported for one fixed batch size cannot run two inputs: count its whole
            # saved graph as each input's, which over- and never under-estimates.
            one = saved(self.model, torch.rand(1, *input_shape, device=self.device))
            return PassCost(per_input=one, shared=0)

    def cut(self, input_shape: tuple[int, ...]) -> BlockCut | None:
        """Where the gradients are taken at this input size: ``None`` for the input, else the
        ``saliency_layer`` block's cut, found with one forward on the first ask.

        Raises:
            ValueError: the model has no blocks, or none of that index.
        """
        layer = self.options.saliency_layer
        if layer is None:
            return None
        key = tuple(int(d) for d in input_shape)
        if key not in self._cuts:
            with self._cut_lock:
                if key not in self._cuts:
                    self._check_eval()
                    x = torch.rand(1, *key, device=self.device)
                    self._cuts[key] = BlockCut.find(self.model, x, layer)
        return self._cuts[key]

    # -- strategy choice ---------------------------------------------------------------------

    def strategy_for(self, batch_size: int) -> str:
        """The strategy used at ``batch_size``: the forced one, the tuned one, or the default.

        Args:
            batch_size: number of inputs in a call.

        Returns:
            A name in ``STRATEGIES``.
        """
        if self.options.strategy != "auto":
            return self.options.strategy
        bucket = bucket_of(batch_size)
        return self._tuner.choice(bucket) or _default_strategy(bucket, self.device)

    def tuning_timings(self, batch_size: int) -> dict[str, float]:
        """Median seconds per strategy measured for ``batch_size``'s bucket (empty if untuned)."""
        return self._tuner.timings(bucket_of(batch_size))

    def warmup(
        self, input_shape: tuple[int, int, int], batch_sizes: Sequence[int] = (1, 8, 32)
    ) -> dict[int, str]:
        """Measure the strategies for each batch size's bucket and remember the winners.

        With a forced strategy, only runs it once per bucket (first-call costs are paid here).

        Args:
            input_shape: (C, H, W) of one input.
            batch_sizes: batch sizes the engine will see; each is rounded up to its bucket.

        Returns:
            bucket -> chosen strategy.
        """
        return {b: self.tune_bucket(input_shape, b) for b in self.buckets(input_shape, batch_sizes)}

    def buckets(self, input_shape: tuple[int, int, int], batch_sizes: Sequence[int]) -> list[int]:
        """The buckets calls of these batch sizes run in, smallest first.

        A batch over what the memory budget holds is computed in chunks of at most
        ``max_batch`` (a power of two): only buckets up to it are ever run.
        """
        most = self.capacity(input_shape).max_batch
        return sorted({bucket_of(min(b, most)) for b in batch_sizes})

    def tune_bucket(
        self,
        input_shape: tuple[int, int, int],
        bucket: int,
        cancelled: Callable[[], bool] | None = None,
    ) -> str:
        """Measure the strategies at ``bucket`` (once) and return the winner.

        With a forced strategy, runs it once (its first-call costs are paid here).

        Args:
            input_shape: (C, H, W).
            bucket: the batch size measured.
            cancelled: checked before each run of a strategy; once it says True the measurement
                stops (a large model's runs take seconds each, a shutdown should not wait for
                all of them).

        Raises:
            TuningCancelled: ``cancelled`` said so; the bucket stays untuned.
        """
        x = torch.rand(bucket, *input_shape, device=self.device)
        if self.options.strategy != "auto":
            self._run(self.options.strategy, x)
            return self.options.strategy
        return self._tune(x, cancelled)

    def is_tuned(self, bucket: int) -> bool:
        """Whether calls at ``bucket`` use a measured (or forced) strategy."""
        return self.options.strategy != "auto" or self._tuner.choice(bucket) is not None

    def tuning_record(self) -> dict[int, dict[str, object]]:
        """What was measured, per bucket, for a tuning cache (``adopt_tuning`` reads it)."""
        return self._tuner.known()

    def adopt_tuning(self, record: dict[int, dict[str, object]]) -> None:
        """Use choices measured earlier on the same model, input size and machine.

        Unknown strategy names (a cache from another version) are ignored.
        """
        for bucket, entry in record.items():
            choice = entry.get("choice")
            if choice in STRATEGIES:
                timings = entry.get("timings") or {}
                self._tuner.remember(int(bucket), str(choice), dict(timings))  # type: ignore[arg-type]

    def _tune(self, x: Tensor, cancelled: Callable[[], bool] | None = None) -> str:
        bucket = bucket_of(x.shape[0])
        plan = self._plan(x)
        candidates = [n for n in STRATEGIES if worth_trying(n, bucket, plan.num_rows)]

        def run(name: str) -> StrategyResult:
            if cancelled is not None and cancelled():
                raise TuningCancelled(f"tuning of batch bucket {bucket} stopped")
            return self._run(name, x)

        return self._tuner.tune(bucket, candidates, run)

    # -- the computation ---------------------------------------------------------------------

    def __call__(self, x: Tensor) -> EngineOutput:
        """Logits, saliency maps, CSMs and features of a batch.

        Args:
            x: (B, C, H, W) float pixels in [0, 1] (moved to the engine's device as float32).

        Returns:
            An ``EngineOutput``.

        Raises:
            ValueError: ``x`` is not a non-empty 4-D batch.
            RuntimeError: called inside ``torch.inference_mode()``, or the model was switched to
                train mode after the engine was built.
        """
        x = self._check_input(x)
        most = self.capacity(tuple(x.shape[1:])).max_batch
        if x.shape[0] > most:
            return _concat([self._compute(chunk) for chunk in x.split(most)])
        return self._compute(x)

    def _compute(self, x: Tensor) -> EngineOutput:
        bucket = bucket_of(x.shape[0])
        name = self.strategy_for(x.shape[0])
        if self.tune_on_first_call and not self.is_tuned(bucket):
            # First batch of this size range and no warm-up: measure now, once.
            name = self._tune(torch.rand(bucket, *x.shape[1:], device=self.device))
        logits, rows, grads, penultimate = self._run(name, x)
        opts = self.options
        saliency = to_maps(grads, opts.sign, opts.channel_max)  # (B, K, D)
        probabilities = torch.softmax(logits, dim=1)
        predicted = logits.argmax(dim=1)
        # Row of the predicted class among the K rows (its index, or 0 for top-N), found
        # without a host sync.
        predicted_row = (rows == predicted.unsqueeze(1)).to(torch.int64).argmax(dim=1)
        csm = cosine_similarity_matrix(saliency)
        return EngineOutput(
            logits=logits,
            probabilities=probabilities,
            predicted=predicted,
            classes=rows,
            saliency=saliency,
            csm=csm,
            features=gga_features(csm, predicted_row),
            strategy=name,
            penultimate=penultimate,
            squeezed=squeezed_logits(self.model, x) if opts.squeeze else None,
            blocks=block_features(self.model, x) if opts.blocks else None,
        )

    def _run(self, name: str, x: Tensor) -> StrategyResult:
        self._check_eval()
        with torch.enable_grad():
            return get_strategy(name)(self.model, x, self._plan(x))

    def _plan(self, x: Tensor) -> Plan:
        num_classes = self._classes(x)
        top_n = self.options.top_n
        num_rows = num_classes if top_n is None else min(top_n, num_classes)
        capacity = self.capacity(tuple(x.shape[1:]))
        return Plan(
            num_rows=num_rows,
            top_n=top_n,
            rescale=self.options.rescale_logits,
            max_rows_times_batch=capacity.max_rows_times_batch(x.shape[0]),
            cut=self.cut(tuple(x.shape[1:])),
        )

    def _classes(self, x: Tensor) -> int:
        """The model's number of classes, learnt from one input the first time."""
        if self._num_classes is None:
            with self._lock:
                if self._num_classes is None:
                    with torch.no_grad():
                        self._num_classes = int(self.model(x[:1]).shape[1])
        return self._num_classes

    def _check_input(self, x: Tensor) -> Tensor:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "GradientEngine needs autograd: call it outside torch.inference_mode() "
                "(torch.no_grad() around the call is fine)"
            )
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a non-empty (B, C, H, W) batch, got {shape}")
        if x.is_inference():
            x = x.clone()  # an inference tensor cannot take part in autograd
        return x.to(self.device, torch.float32)

    def _check_eval(self) -> None:
        if not any(m.training for _, m in self._modules):
            return
        training = [name or "<model>" for name, m in self._modules if m.training]
        if training:
            raise RuntimeError(
                f"the model is in train mode ({', '.join(training[:3])}); GGA needs eval mode or "
                "an input's maps depend on its batch: call model.eval() (the engine set it once "
                "and does not flip a shared model back)"
            )
