"""Benchmark of the gradient engine against the reference loop, the *limit* and a plain forward.

For each model case and batch size it measures (medians of ``repeats`` runs after one untimed
run, all in the same process and thread setting):

- ``forward``: one plain forward without autograd;
- ``limit``: ``t_fwd + K * t_vjp``, a forward that records the graph plus K single-class
  input-only VJPs on it, each VJP timed on its own;
- ``reference``: the reference algorithm (one forward, a Python loop of K ``loss.backward()``
  of the batch-mean cross-entropy, sign, channel max, CSM) on the model with its parameters
  requiring grad, as the published code runs on an ordinary model (it ends with
  ``model.zero_grad()``: it pays for weight gradients);
- ``reference-frozen``: the same loop with the parameters frozen (input gradients only);
- every engine strategy, forced, and ``auto``: the engine after ``warmup`` (its own choice),
  each as the full engine call (gradients, maps, CSM, features);
- ``trust score``: for a zoo model with its ``detector.json``, the whole served pipeline (the
  engine, every fused view, the fusion and the calibration), whose cost is compared with
  ``trust gga pass``: the pipeline's own engine call alone (the detector's engine options and
  the strategy the pipeline chose), so that the ratio is the views' cost and not the noise of
  two separate strategy choices.

Ratios are times divided by the baseline's time (``ratio_to_ref`` < 1 means faster than the
reference). A measurement whose estimated cost (from the limit) exceeds ``budget_s`` per run is
skipped and recorded as such, so the benchmark stays within minutes on a 2-core machine.
"""

import copy
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.autotune import time_call, time_round_robin
from detectors.csm import cosine_similarity_matrix
from detectors.engine import EngineOptions, GradientEngine
from detectors.features import gga_features
from detectors.persistence import DetectorNotFoundError
from detectors.pipeline import GGAPipeline
from detectors.saliency import RESCALE_TARGET
from detectors.strategies import STRATEGIES
from detectors.trust import TrustScorer
from models.architectures import build_model
from models.repository import ModelRepository

logger = logging.getLogger(__name__)


@dataclass
class BenchCase:
    """One model to benchmark.

    Attributes:
        name: label in the table (a zoo name, or e.g. ``resnet20-random-c100``).
        module: the model (eval mode).
        input_shape: (C, H, W).
        num_classes: C.
        scorer: the model's fitted trust scorer, to time the whole served pipeline too.
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    scorer: TrustScorer | None = None


@dataclass
class BenchRecord:
    """One row of the benchmark (times in milliseconds per image; ratios are time ratios)."""

    model: str
    classes: int
    rows: int
    batch: int
    strategy: str
    ms_per_image: float | None
    images_per_s: float | None
    ratio_to_ref: float | None
    ratio_to_limit: float | None
    ratio_to_forward: float | None
    device: str
    threads: int
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def resnet_case(num_classes: int, seed: int = 0) -> BenchCase:
    """ResNet-20 with random weights (BatchNorm, eval mode) at ``num_classes`` classes."""
    torch.manual_seed(seed)
    module = build_model("resnet", {"num_classes": num_classes})
    return BenchCase(f"resnet20-random-c{num_classes}", module, (3, 32, 32), num_classes)


# Architecture of each default zoo model, for a random-weight stand-in while it is not trained.
STAND_INS = {"fashion-mnist-cnn": "compact-cnn", "mnist-lenet-low": "lenet"}


def default_cases(
    names: Sequence[str] | None, repo: str | None, defaults: Sequence[str]
) -> list[BenchCase]:
    """Zoo models to benchmark.

    Args:
        names: models asked for by name (each must exist), or ``None`` for ``defaults``.
        repo: repository folder (``None``: the default repository).
        defaults: models used where present; a missing one is replaced by a random-weight
            stand-in of its architecture (``STAND_INS``; the timing does not depend on the
            weights), labelled ``<architecture>-random``.

    Returns:
        The cases.

    Raises:
        ModelNotFoundError: a model asked for by name is not in the repository.
    """
    repository = ModelRepository(repo)
    present = set(repository.names())
    cases = []
    for name in names or defaults:
        if names or name in present:
            loaded = repository.load(name)
            card = loaded.card
            try:
                scorer = TrustScorer.load(loaded.path, card.weights_sha256, name)
            except DetectorNotFoundError:
                scorer = None
            cases.append(BenchCase(name, loaded.module, card.input_shape, card.num_classes, scorer))
        elif name in STAND_INS:
            torch.manual_seed(0)
            arch = STAND_INS[name]
            cases.append(BenchCase(f"{arch}-random", build_model(arch, {}), (1, 28, 28), 10))
    return cases


def reference_loop(model: nn.Module, x: Tensor, rescale: bool = True) -> Tensor:
    """The reference GGA algorithm (``src/CSM.py``), device-agnostic: the benchmark's baseline.

    One forward, then for every class a ``loss.backward(retain_graph=True)`` of the batch-mean
    cross-entropy, sign, max over channels, and the CSM by one matmul. Parameter gradients are
    computed if the parameters require grad (and cleared at the end, as the reference does).

    Args:
        model: the classifier.
        x: (B, C, H, W) inputs.
        rescale: the reference's logit rescaling.

    Returns:
        (B, C, C) CSMs (NaN where a map is zero, as in the reference).
    """
    x_grad = x.clone().requires_grad_()
    logits = model(x_grad)
    if rescale:
        logits = logits / torch.max(torch.abs(logits), 1, keepdim=True).values * RESCALE_TARGET
    batch, classes = logits.shape
    deltas = []
    for c in range(classes):
        y = torch.full((batch,), c, device=x.device, dtype=torch.long)
        F.cross_entropy(logits, y).backward(retain_graph=True)
        deltas.append(torch.sign(x_grad.grad).detach().clone())
        x_grad.grad.zero_()
    model.zero_grad()
    maps = torch.stack(deltas, dim=0).amax(dim=-3).view(classes, batch, -1)
    maps = (maps / maps.norm(dim=2, keepdim=True)).transpose(0, 1)
    return maps @ maps.transpose(1, 2)


def measure_limit(
    model: nn.Module, x: Tensor, num_rows: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """``(t_fwd, t_vjp)`` in seconds: a graph-recording forward, and one single-class VJP.

    The limit of any strategy built from VJPs is ``t_fwd + num_rows * t_vjp``.
    """
    x_in = x.detach().requires_grad_(True)

    def forward() -> Tensor:
        with torch.enable_grad():
            return model(x_in)

    t_fwd = time_call(forward, device, repeats)
    logits = forward()
    v = torch.softmax(logits.detach(), dim=1)
    v[:, 0] -= 1  # the cotangent of class 0; every class costs the same
    n_vjps = max(repeats, min(num_rows, 10))
    times = []
    for i in range(n_vjps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.autograd.grad(logits, x_in, v, retain_graph=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first VJP pays one-off costs
            times.append(time.perf_counter() - start)
    return t_fwd, statistics.median(times)


def _frozen_copy(model: nn.Module, requires_grad: bool) -> nn.Module:
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(requires_grad)
    return clone


def bench_case(
    case: BenchCase,
    batch_sizes: Sequence[int],
    repeats: int,
    device: torch.device,
    budget_s: float,
    top_n: int | None = None,
) -> list[BenchRecord]:
    """All rows of one model case (see the module docstring).

    Args:
        case: the model.
        batch_sizes: batch sizes to measure.
        repeats: timed runs per measurement (median).
        device: where to run.
        budget_s: skip a measurement whose estimated time per run exceeds this.
        top_n: measure the engine with only the top-N classes (then no reference rows).

    Returns:
        The records, skipped ones with ``ms_per_image`` None and a note.
    """
    model = case.module.to(device).eval()
    trainable = _frozen_copy(model, requires_grad=True)
    frozen = _frozen_copy(model, requires_grad=False)
    records: list[BenchRecord] = []
    for batch in batch_sizes:
        records += _bench_batch(case, trainable, frozen, batch, repeats, device, budget_s, top_n)
        logger.info("benchmarked %s at batch %d", case.name, batch)
    return records


def _bench_batch(
    case: BenchCase,
    trainable: nn.Module,
    frozen: nn.Module,
    batch: int,
    repeats: int,
    device: torch.device,
    budget_s: float,
    top_n: int | None,
) -> list[BenchRecord]:
    rows = case.num_classes if top_n is None else min(top_n, case.num_classes)
    label = case.name if top_n is None else f"{case.name} top-{rows}"
    records: list[BenchRecord] = []
    x = torch.rand(batch, *case.input_shape, device=device)

    def record(strategy: str, seconds: float | None, note: str = "", **ratios: float) -> None:
        records.append(
            BenchRecord(
                model=label, classes=case.num_classes, rows=rows, batch=batch, strategy=strategy,
                ms_per_image=None if seconds is None else seconds * 1e3 / batch,
                images_per_s=None if seconds is None else batch / seconds,
                ratio_to_ref=ratios.get("ref"), ratio_to_limit=ratios.get("limit"),
                ratio_to_forward=ratios.get("forward"), device=str(device),
                threads=torch.get_num_threads(), note=note,
            )
        )  # fmt: skip

    # The limit's parts: a graph-recording forward, and one single-class VJP on a kept graph.
    x_in = x.detach().requires_grad_(True)
    with torch.enable_grad():
        graph_logits = frozen(x_in)
    v = torch.softmax(graph_logits.detach(), dim=1)
    v[:, 0] -= 1  # the cotangent of class 0; every class costs the same

    def plain_forward() -> Tensor:
        with torch.no_grad():
            return frozen(x)

    def graph_forward() -> Tensor:
        with torch.enable_grad():
            return frozen(x_in)

    fns: dict[str, Callable[[], object]] = {
        "forward": plain_forward,
        "t_fwd": graph_forward,
        "t_vjp": lambda: torch.autograd.grad(graph_logits, x_in, v, retain_graph=True),
    }
    probe = time_round_robin(fns, device, 1)
    t_limit_estimate = probe["t_fwd"] + rows * probe["t_vjp"]
    skipped = f"skipped: estimated > {budget_s:g} s per run"
    # The reference also pays weight gradients: allow it about twice the limit.
    with_reference = top_n is None and t_limit_estimate * 3 <= budget_s
    # Every strategy costs about the limit or less (replication: K forwards and backwards).
    with_engine = t_limit_estimate * 1.5 <= budget_s
    chosen = ""
    if with_reference:
        fns["reference"] = lambda: reference_loop(trainable, x)
        fns["reference-frozen"] = lambda: reference_loop(frozen, x)
    if with_engine:
        for name in STRATEGIES:
            engine = GradientEngine(frozen, EngineOptions(top_n=top_n, strategy=name))
            fns[name] = lambda engine=engine: engine(x)
        auto = GradientEngine(frozen, EngineOptions(top_n=top_n), tuning_repeats=repeats)
        chosen = next(iter(auto.warmup(case.input_shape, [batch]).values()))
        fns["auto"] = lambda: auto(x)
        if case.scorer is not None and top_n is None:
            pipeline = GGAPipeline(frozen, case.scorer, device=device)
            pipeline.warmup(case.input_shape, (batch,))
            fns["trust gga pass"] = lambda: pipeline.engine(x)
            fns["trust score"] = lambda: pipeline(x)
    t = time_round_robin(fns, device, repeats)

    t_forward = t["forward"]
    t_limit = t["t_fwd"] + rows * t["t_vjp"]
    t_ref = t.get("reference")
    record("forward", t_forward, forward=1.0, limit=t_forward / t_limit)
    limit_note = f"t_fwd {t['t_fwd'] * 1e3:.2f} ms + {rows} x t_vjp {t['t_vjp'] * 1e3:.2f} ms"
    record("limit", t_limit, limit_note, limit=1.0, forward=t_limit / t_forward)
    if top_n is None and t_ref is None:
        record("reference", None, skipped)
    names = ["reference", "reference-frozen", *STRATEGIES, "auto", "trust gga pass", "trust score"]
    notes = {
        "reference": "parameters require grad (as published)",
        "reference-frozen": "parameters frozen",
        "auto": f"chose {chosen}",
    }
    if "trust score" in t:
        views = ",".join(case.scorer.view_names) if case.scorer else ""
        ratio = t["trust score"] / t["trust gga pass"]
        notes["trust gga pass"] = "the pipeline's engine call alone"
        notes["trust score"] = f"{ratio:.3f}x its GGA pass alone; views {views}"
    for name in names:
        if name in t:
            seconds = t[name]
            record(
                name, seconds, notes.get(name, ""),
                ref=None if t_ref is None else seconds / t_ref,
                limit=seconds / t_limit, forward=seconds / t_forward,
            )  # fmt: skip
        elif name not in ("reference", "reference-frozen", "trust gga pass", "trust score"):
            record(name, None, skipped)
    return records


def csm_share(
    case: BenchCase, batch: int, repeats: int, device: torch.device, budget_s: float
) -> BenchRecord | None:
    """The share of the CSM and features step in a full engine call (auto strategy).

    Returns:
        A record with ``strategy="csm+features"``, its time, and in ``note`` its share of the
        engine's total; ``None`` when the engine call would exceed the budget.
    """
    model = _frozen_copy(case.module.to(device), requires_grad=False)
    x = torch.rand(batch, *case.input_shape, device=device)
    t_fwd, t_vjp = measure_limit(model, x, case.num_classes, 1, device)
    if (t_fwd + case.num_classes * t_vjp) * 1.5 > budget_s:
        return None
    engine = GradientEngine(model, tuning_repeats=repeats)
    engine.warmup(case.input_shape, [batch])
    t_total = time_call(lambda: engine(x), device, repeats)
    maps = engine(x).saliency
    predicted_row = torch.zeros(batch, dtype=torch.int64, device=device)

    def step() -> Tensor:
        return gga_features(cosine_similarity_matrix(maps), predicted_row)

    t_step = time_call(step, device, repeats)
    return BenchRecord(
        model=case.name, classes=case.num_classes, rows=case.num_classes, batch=batch,
        strategy="csm+features", ms_per_image=t_step * 1e3 / batch,
        images_per_s=batch / t_step, ratio_to_ref=None, ratio_to_limit=None,
        ratio_to_forward=None, device=str(device), threads=torch.get_num_threads(),
        note=f"{100 * t_step / t_total:.1f}% of the engine's {t_total * 1e3 / batch:.2f} ms/image",
    )  # fmt: skip


def format_table(records: Sequence[BenchRecord]) -> str:
    """A fixed-width text table of the records."""
    head = (
        f"{'model':<28} {'C':>4} {'K':>4} {'batch':>5} {'strategy':<17} {'ms/img':>9} "
        f"{'img/s':>9} {'/ref':>6} {'/limit':>7} {'/fwd':>7}  note"
    )
    lines = [head, "-" * len(head)]

    def f(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in records:
        lines.append(
            f"{r.model:<28} {r.classes:>4} {r.rows:>4} {r.batch:>5} {r.strategy:<17} "
            f"{f(r.ms_per_image, '9.3f'):>9} {f(r.images_per_s, '9.1f'):>9} "
            f"{f(r.ratio_to_ref, '6.2f'):>6} {f(r.ratio_to_limit, '7.2f'):>7} "
            f"{f(r.ratio_to_forward, '7.1f'):>7}  {r.note}"
        )
    return "\n".join(lines)


def run_benchmark(
    cases: Sequence[BenchCase],
    batch_sizes: Sequence[int],
    repeats: int,
    device: torch.device,
    budget_s: float,
    top_n_case: BenchCase | None = None,
    top_n: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRecord]:
    """Every case at every batch size, plus top-N and the CSM share on ``top_n_case``.

    Args:
        cases: models to measure with all classes.
        batch_sizes: batch sizes.
        repeats: timed runs per measurement (median).
        device: where to run.
        budget_s: per-run time above which a measurement is skipped.
        top_n_case: the many-class model (ResNet-20, C=100) for the top-N rows and CSM share.
        top_n: N of the top-N rows.
        progress: called with a line after each case.

    Returns:
        All records in order.
    """
    records: list[BenchRecord] = []
    for case in cases:
        records += bench_case(case, batch_sizes, repeats, device, budget_s)
        if progress:
            progress(f"done: {case.name}")
    if top_n_case is not None:
        records += bench_case(top_n_case, batch_sizes, repeats, device, budget_s, top_n=top_n)
        for batch in batch_sizes:
            share = csm_share(top_n_case, batch, repeats, device, budget_s)
            if share is not None:
                records.append(share)
        if progress:
            progress(f"done: {top_n_case.name} top-{top_n} and CSM share")
    return records


def _find(
    records: Sequence[BenchRecord], model: str, batch: int, strategy: str
) -> BenchRecord | None:
    for r in records:
        if r.model == model and r.batch == batch and r.strategy == strategy:
            return r if r.ms_per_image is not None else None
    return None


def summarize_floors(records: Sequence[BenchRecord]) -> list[str]:
    """The issue's floors, each with the measured value and PASS/MISS (or n/a if unmeasured).

    The engine is the ``auto`` row (the strategy it chose itself). Floors: batch 1 >= 2.5x faster
    than the reference; batch 32 >= 1.3x faster; batch >= 8 within 1.15x of the limit; top-5 of
    100 classes >= 10x cheaper than all 100; CSM + features < 25% of the total at C=100; the
    whole trust score (views, fusion, calibration) at batch 32 within 1.2x of the engine alone.
    """
    lines = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    full_models = sorted({r.model for r in records if r.rows == r.classes})
    for model in full_models:
        for r in records:
            if r.model != model or r.strategy != "auto" or r.ms_per_image is None:
                continue
            ref = _find(records, model, r.batch, "reference")
            limit = _find(records, model, r.batch, "limit")
            if ref is not None and r.batch in (1, 32):
                need = 2.5 if r.batch == 1 else 1.3
                speedup = ref.ms_per_image / r.ms_per_image
                lines.append(
                    f"{verdict(speedup >= need)} {model} batch {r.batch}: engine ({r.note}) "
                    f"{speedup:.3f}x faster than the reference (floor {need}x)"
                )
            if limit is not None and r.batch >= 8:
                ratio = r.ms_per_image / limit.ms_per_image
                lines.append(
                    f"{verdict(ratio <= 1.15)} {model} batch {r.batch}: engine ({r.note}) at "
                    f"{ratio:.3f}x the limit (floor 1.15x)"
                )
    for r in records:
        if r.strategy == "auto" and r.rows < r.classes and r.ms_per_image is not None:
            full_name = r.model.rsplit(" top-", 1)[0]
            full = _find(records, full_name, r.batch, "auto")
            if full is not None:
                cheaper = full.ms_per_image / r.ms_per_image
                lines.append(
                    f"{verdict(cheaper >= 10)} {r.model} batch {r.batch}: {cheaper:.1f}x cheaper "
                    f"than all {r.classes} classes (floor 10x)"
                )
        if r.strategy == "trust score" and r.ms_per_image is not None and r.batch == 32:
            ratio = float(r.note.split("x")[0])
            lines.append(
                f"{verdict(ratio <= 1.2)} {r.model} batch 32: the trust score costs {ratio:.3f}x "
                "its GGA pass alone (floor 1.2x)"
            )
        if r.strategy == "csm+features" and r.ms_per_image is not None:
            share = float(r.note.split("%")[0])
            lines.append(
                f"{verdict(share < 25)} {r.model} batch {r.batch}: CSM + features {share:.1f}% "
                "of the total (floor < 25%)"
            )
    return lines
