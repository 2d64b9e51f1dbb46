"""The engine at the size users run: an ImageNet-layout ResNet-18, 224 x 224, 1,000 classes.

``gga bench engine --imagenet`` adds these rows to the engine benchmark, each at batch 1 (the
worst case per image) with the process's peak resident memory while it ran:

- ``forward`` and ``limit`` with every class: the limit ``t_fwd + 1000 x t_vjp`` is what any
  all-class strategy costs at least (running one would take minutes per image here, so the
  strategies are skipped by the benchmark's budget);
- the classes ``gga import`` reads on this machine (``detectors.row_cost``) at the input, every
  strategy and the engine's own choice: the **default choice** where the input affords them;
- **saliency at a block** (``EngineOptions.saliency_layer``, every channel's sign kept, as it
  ships: docs/performance.md) for the same classes, at the middle blocks (28x28 and 14x14) and
  at the block the choice moved to where the input cost too much (then that row is the
  **default choice**), the engine's own strategy timed in the same rounds as a plain forward.

The weights are random (built in code, no download): cost and memory do not depend on them.
"""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from detectors.autotune import time_round_robin
from detectors.engine import EngineOptions, GradientEngine
from detectors.row_cost import RowChoice, choose_row_ceiling
from gga_lab.bench.engine import BenchCase, BenchRecord, bench_case
from models.architectures import build_model

MAX_FORWARDS_FLOOR = 10.0  # issue 25: the default choice costs at most 10 forwards at batch 1
MAX_MEMORY_GIB = 4.0  # ...and the process stays under 4 GiB
LAYERS = (2, 3)  # the blocks measured: 28x28 and 14x14 of the five (112, 56, 28, 14, 7)
# Per-run budget of these rows: a run of a dozen rows at 224 x 224 takes about a second on a CPU,
# one of all 1,000 classes about a minute even on a quiet one (53 s), which the limit row states
# without running it (a budget of 60 s let a quiet machine run every strategy at 1,000 classes).
BUDGET_S = 10.0


def imagenet_case(num_classes: int = 1000, seed: int = 0) -> BenchCase:
    """ResNet-18 in the ImageNet layout, random weights, eval mode."""
    torch.manual_seed(seed)
    module = build_model("resnet-imagenet", {"num_classes": num_classes}).eval()
    return BenchCase(f"resnet18-imagenet-c{num_classes}", module, (3, 224, 224), num_classes)


def _peak_kib() -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return None


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, float | None]]:
    """The process's peak resident memory (GiB) over the block, in ``["gib"]`` (Linux; else None).

    The kernel's high-water mark is reset to what is resident now on entry (``clear_refs`` 5),
    so the figure is the block's own peak, the model and everything loaded before included.
    """
    out: dict[str, float | None] = {"gib": None}
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak since start
        Path("/proc/self/clear_refs").write_text("5")
    yield out
    peak = _peak_kib()
    out["gib"] = None if peak is None else peak / 1024**2


def _with_peak(records: list[BenchRecord], gib: float | None) -> list[BenchRecord]:
    if gib is not None:
        for r in records:
            r.note = f"{r.note}; peak RSS {gib:.2f} GiB".lstrip("; ")
    return records


def imagenet_rows(
    repeats: int,
    device: torch.device,
    progress: Callable[[str], None] = lambda line: None,
    case: BenchCase | None = None,
) -> tuple[list[BenchRecord], RowChoice, dict[str, float | None]]:
    """The rows of the module docstring, the default choice, and each group's peak memory.

    Returns:
        (records, the measured choice, {"all": GiB, "default": GiB}).
    """
    case = case or imagenet_case()
    case.module.to(device)
    peaks: dict[str, float | None] = {}
    with peak_memory() as peak:
        records = bench_case(case, [1], repeats, device, BUDGET_S)
    peaks["all"] = peak["gib"]
    _with_peak(records, peak["gib"])
    progress(f"done: {case.name}, all classes (limit)")
    choice = choose_row_ceiling(case.module, case.input_shape, case.num_classes, device=device)
    progress(f"default choice: {choice.reason}")
    block = choice.saliency_layer
    with peak_memory() as peak:
        chosen = bench_case(case, [1], repeats, device, BUDGET_S, top_n=choice.top_n)
    what = "default choice" if block is None else "the input at the default choice's classes"
    for r in chosen:
        r.note = f"{what}; {r.note}".rstrip("; ")
    records += _with_peak(chosen, peak["gib"])
    peaks["default" if block is None else "input"] = peak["gib"]
    progress(f"done: {case.name}, the input at the top {choice.rows}")
    layers = LAYERS if block is None else tuple(sorted({block, *LAYERS}))
    with peak_memory() as peak:
        layered = layer_rows(case, choice.top_n, layers, repeats, device)
    for r, layer in zip(layered, layers, strict=True):
        if layer == block:
            r.note = f"default choice; {r.note}"
    peaks["layers"] = peak["gib"]
    if block is not None:  # every block's engine in one process: the most the choice needs
        peaks["default"] = peak["gib"]
    records += _with_peak(layered, peak["gib"])
    progress(f"done: {case.name}, saliency at blocks {', '.join(map(str, layers))}")
    return records, choice, peaks


def layer_rows(
    case: BenchCase,
    top_n: int | None,
    layers: tuple[int, ...],
    repeats: int,
    device: torch.device,
) -> list[BenchRecord]:
    """The engine (its own strategy) with saliency at each of ``layers``, batch 1, and a forward.

    Every engine is tuned first, then all are timed in the same interleaved rounds.
    """
    model = case.module.to(device).eval()
    x = torch.rand(1, *case.input_shape, device=device)
    fns = {"forward": lambda: _no_grad(model, x)}
    chosen = {}
    for layer in layers:
        options = EngineOptions(top_n=top_n, saliency_layer=layer, channel_max=False)
        engine = GradientEngine(model, options, tuning_repeats=repeats)
        chosen[layer] = next(iter(engine.warmup(case.input_shape, [1]).values()))
        shape = "x".join(map(str, engine.cut(case.input_shape).shape))
        fns[f"block {layer} ({shape})"] = lambda engine=engine: engine(x)
    times = time_round_robin(fns, device, repeats)
    rows = case.num_classes if top_n is None else top_n
    label = case.name if top_n is None else f"{case.name} top-{rows}"
    records = []
    for (name, seconds), layer in zip(list(times.items())[1:], layers, strict=True):
        records.append(
            BenchRecord(
                model=label, classes=case.num_classes, rows=rows, batch=1, strategy="auto",
                ms_per_image=seconds * 1e3, images_per_s=1 / seconds, ratio_to_ref=None,
                ratio_to_limit=None, ratio_to_forward=seconds / times["forward"],
                device=str(device), threads=torch.get_num_threads(),
                note=f"saliency at {name}, every channel; chose {chosen[layer]}",
            )
        )  # fmt: skip
    return records


def _no_grad(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def imagenet_floors(
    records: list[BenchRecord], choice: RowChoice, peaks: dict[str, float | None]
) -> list[str]:
    """PASS/MISS of the issue's floors on the default choice at batch 1."""
    lines = []
    auto = next(
        (
            r
            for r in records
            if r.rows == choice.rows
            and r.strategy == "auto"
            and r.batch == 1
            and r.note.startswith("default choice")
        ),
        None,
    )
    if auto is None or auto.ratio_to_forward is None:
        return [f"n/a {choice.rows} rows: the engine was not measured"]
    ok = auto.ratio_to_forward <= MAX_FORWARDS_FLOOR
    where = "" if choice.saliency_layer is None else f", saliency at block {choice.saliency_layer}"
    lines.append(
        f"{'PASS' if ok else 'MISS'} {auto.model} batch 1, default choice (top {choice.rows} of "
        f"{choice.num_classes}{where}): {auto.ratio_to_forward:.1f} forwards per image "
        f"(floor {MAX_FORWARDS_FLOOR:g})"
    )
    gib = peaks.get("default")
    if gib is not None:
        ok = gib < MAX_MEMORY_GIB
        lines.append(
            f"{'PASS' if ok else 'MISS'} {auto.model} batch 1, default choice: peak resident "
            f"memory {gib:.2f} GiB (floor < {MAX_MEMORY_GIB:g} GiB)"
        )
    return lines


def export_imagenet_onnx(path: Path, num_classes: int = 1000, seed: int = 0) -> Path:
    """Write the benchmark's ResNet-18 as a user's ONNX file would come, and its labels.

    ``torch.onnx.export`` with its defaults (the dynamo exporter, opset 20, the weights in
    ``<path>.data`` beside the file, batch fixed at 1: ``gga import`` makes it take any batch),
    and ``labels.txt`` (``class-0000`` ...) in the same folder.

    Returns:
        The labels file.
    """
    case = imagenet_case(num_classes, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(case.module, (torch.rand(1, *case.input_shape),), str(path))
    labels = path.parent / "labels.txt"
    labels.write_text("".join(f"class-{i:04d}\n" for i in range(num_classes)))
    return labels
