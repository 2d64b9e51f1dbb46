"""Detection against cost when GGA's saliency is taken at a block instead of the input (issue 25).

``EngineOptions.saliency_layer`` takes the K gradients with respect to one block's output
activation (``detectors.block_cut``), so the backward pass stops there. For a zoo model this
measures every choice: the input (the reference) and each block of ``models.blocks``,
shallowest first, each in two forms: the engine's maps as they are (sign, then the max over the
activation's channels) and without the channel max (every channel's sign, D = C_a H_a W_a), since
the max of a few dozen channels' signs is 1 almost everywhere. Per choice:

- **cost**: the engine's milliseconds per image at batch 1 and batch 32 (its auto-tuned
  strategy, every choice timed in the same interleaved rounds) and the ratio to the input's;
- **detection**: the ``gga-paper`` and ``gga-csm`` views fitted on clean, correctly classified
  training images and scored on clean, correctly classified test images against untrusted
  inputs made from those: FGSM and PGD l_inf at the data set's budget (``gga_lab.fit.LINF_EPS``,
  successes only), l_inf uniform noise (all), the paired other data set and uniform noise images
  (``models.data.ood``); AUROC per kind and pooled over all of them.

A choice is worth it where neither view loses more than ``MAX_AUROC_LOSS`` pooled AUROC and the
engine costs at most ``MAX_COST_RATIO`` of the input's at both batch sizes. One engine pass per
block gives both forms: the channel max is taken on its sign maps (exactly the engine's own,
tested).

    gga lab saliency-layers cifar10-resnet20 --data-dir ../shared/data \\
        --out docs/results/saliency-layers/cifar10-resnet20.json
"""

import json
import logging
import math
import os
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from detectors.autotune import time_round_robin
from detectors.collect import view_inputs
from detectors.csm import cosine_similarity_matrix
from detectors.engine import EngineOptions, EngineOutput, GradientEngine
from detectors.features import gga_features
from detectors.views import ViewInputs
from detectors.views.gga import GGACSMView, GGAPaperView
from gga_lab.fit import LINF_EPS
from gga_lab.metrics import auroc
from gga_lab.untrusted import training_attack_kinds
from models.blocks import block_features
from models.data import load_dataset
from models.data.ood import PAIRED_DATASET, other_dataset, uniform_noise
from models.repository import ModelRepository

logger = logging.getLogger(__name__)

MAX_AUROC_LOSS = 0.02  # two pooled AUROC points
MAX_COST_RATIO = 0.8  # a real saving: at least a fifth off the engine's time per image
BATCH_SIZES = (1, 32)
VIEWS = ("gga-paper", "gga-csm")


@dataclass(frozen=True)
class Choice:
    """Where the gradients are taken and how the maps are made.

    Attributes:
        layer: ``EngineOptions.saliency_layer``: ``None`` for the input, else a block.
        channel_max: the max over channels after the sign (the engine's default).
    """

    layer: int | None
    channel_max: bool = True

    @property
    def name(self) -> str:
        if self.layer is None:
            return "input"
        return f"block {self.layer} {'max' if self.channel_max else 'all'}"

    def options(self, strategy: str = "auto") -> EngineOptions:
        return EngineOptions(
            saliency_layer=self.layer, channel_max=self.channel_max, strategy=strategy
        )


@dataclass
class Setup:
    """What every choice is measured on."""

    model: nn.Module
    dataset: str
    fit: tuple[Tensor, Tensor]  # clean training images and labels, correctly classified
    clean: Tensor  # clean test images, correctly classified
    untrusted: dict[str, Tensor]  # kind -> inputs
    eps: float
    strategy: str = "auto"  # the engine's (auto-tuned, or forced to skip the tuning)


def choices(model: nn.Module, input_shape: tuple[int, ...]) -> list[Choice]:
    """The input, then each block with and without the channel max."""
    probe = torch.zeros(1, *input_shape)
    blocks = len(block_features(model, probe))
    return [Choice(None)] + [Choice(b, cm) for b in range(blocks) for cm in (True, False)]


def with_channel_max(inputs: ViewInputs, out: EngineOutput, channels: int) -> ViewInputs:
    """``inputs`` of an engine run without the channel max, as the engine makes them with it.

    The engine's max is taken over the channels of the sign maps, so it can be taken afterwards
    on ``out.saliency`` (B, K, channels * H * W): the CSM and the ten features follow.
    """
    b, k, d = out.saliency.shape
    maps = out.saliency.view(b, k, channels, d // channels).amax(dim=2)
    csm = cosine_similarity_matrix(maps)
    predicted_row = (out.classes == out.predicted.unsqueeze(1)).to(torch.int64).argmax(dim=1)
    features = gga_features(csm, predicted_row)
    return replace(
        inputs,
        csm=csm.cpu().numpy().astype(np.float32),
        gga=features.cpu().numpy().astype(np.float64),
    )


def collect_both(
    engine: GradientEngine, x: Tensor, channels: int, batch: int, desc: str, progress: bool
) -> dict[bool, ViewInputs]:
    """ViewInputs of ``x`` with (True) and without (False) the channel max, in one engine pass.

    ``engine`` must make sign maps without the channel max; ``channels`` is the number of
    channels of what it differentiates (the input's, or the block activation's).
    """
    parts: dict[bool, list[ViewInputs]] = {True: [], False: []}
    for i in tqdm(range(0, len(x), batch), desc=desc, unit="batch", disable=not progress):
        out = engine(x[i : i + batch])
        plain = view_inputs(out)
        parts[False].append(plain)
        parts[True].append(with_channel_max(plain, out, channels))
    return {cm: ViewInputs.concat(p) for cm, p in parts.items()}


def detection(
    fit: ViewInputs, clean: ViewInputs, untrusted: dict[str, ViewInputs], grey: bool
) -> dict[str, dict[str, float | None]]:
    """Per GGA view, AUROC of the clean inputs against each kind and against all pooled.

    A view that cannot be fitted on these maps (a CSM of constant entries, say) gets NaNs.
    """
    results: dict[str, dict[str, float | None]] = {}
    for view in (GGAPaperView(bins=100 if grey else 500), GGACSMView()):
        try:
            view.fit_features(fit)
            trusted = view.predict_features(clean)
            scores = {kind: view.predict_features(z) for kind, z in untrusted.items()}
        except (ValueError, np.linalg.LinAlgError) as err:  # DetectorFitError is a ValueError
            logger.warning("%s cannot be fitted here: %s", view.name, err)
            results[view.name] = {kind: None for kind in [*untrusted, "pooled"]}
            continue
        figures = {kind: auroc(trusted, s) for kind, s in scores.items()}
        figures["pooled"] = auroc(trusted, np.concatenate(list(scores.values())))
        results[view.name] = {k: _finite(v) for k, v in figures.items()}
    return results


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def timings(
    model: nn.Module, all_choices: list[Choice], x: Tensor, repeats: int, strategy: str = "auto"
) -> dict[str, dict[str, Any]]:
    """Per choice: ms per image and the strategy at each of ``BATCH_SIZES`` (auto-tuned unless
    ``strategy`` forces one)."""
    engines = {c.name: GradientEngine(model, c.options(strategy)) for c in all_choices}
    shape = tuple(x.shape[1:])
    for name, engine in engines.items():
        logger.info("tuning the engine for %s", name)
        engine.warmup(shape, BATCH_SIZES)
    figures: dict[str, dict[str, Any]] = {name: {} for name in engines}
    for b in BATCH_SIZES:
        xb = x[:b]
        calls = {name: (lambda e=e, xb=xb: e(xb)) for name, e in engines.items()}
        seconds = time_round_robin(calls, torch.device("cpu"), repeats)
        for name, engine in engines.items():
            figures[name][f"ms_per_image_b{b}"] = round(1000 * seconds[name] / b, 3)
            figures[name][f"strategy_b{b}"] = engine.strategy_for(b)
    base = figures[Choice(None).name]
    for entry in figures.values():
        for b in BATCH_SIZES:
            key = f"ms_per_image_b{b}"
            entry[f"cost_ratio_b{b}"] = round(entry[key] / base[key], 3)
    return figures


def _correct(model: nn.Module, x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        predicted = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    keep = (predicted == y).nonzero().squeeze(1)[:n]
    return x[keep], y[keep]


def setup(
    name: str,
    repo: str | None,
    data_dir: str | None,
    n_fit: int,
    n_test: int,
    pgd_steps: int,
    seed: int,
    batch: int,
    progress: bool,
) -> Setup:
    """The model, its clean fit and test images, and the untrusted test inputs of each kind."""
    loaded = ModelRepository(repo).load(name)
    model, dataset = loaded.module, loaded.card.dataset
    train = load_dataset(dataset, "train", data_dir=data_dir, limit=int(n_fit * 1.2) + 20)
    test = load_dataset(dataset, "test", data_dir=data_dir, limit=int(n_test * 1.2) + 20)
    fit = _correct(model, train.float(), train.y, n_fit)
    clean, labels = _correct(model, test.float(), test.y, n_test)
    eps = LINF_EPS.get(dataset, 0.1)
    shape = tuple(clean.shape[1:])
    untrusted: dict[str, Tensor] = {}
    for kind, made in training_attack_kinds(eps, seed, pgd_steps).items():
        if kind in ("fgsm", "pgd", "noise"):
            untrusted[kind], _ = made.run(model, clean, labels, batch, f"{name}: {kind}", progress)
    other = PAIRED_DATASET.get(dataset, "mnist")
    untrusted[f"ood {other}"] = other_dataset(other, n_test, shape, data_dir=data_dir, seed=seed)
    untrusted["ood uniform"] = uniform_noise(n_test, shape, seed=seed)
    return Setup(model, dataset, fit, clean, untrusted, eps)


def measure_layer(
    s: Setup, layer: int | None, batch: int, progress: bool
) -> dict[bool, dict[str, dict[str, float | None]]]:
    """Detection of the maps taken at ``layer``, with (True) and without (False) channel max."""
    options = EngineOptions(saliency_layer=layer, channel_max=False, strategy=s.strategy)
    engine = GradientEngine(s.model, options)
    shape = tuple(s.clean.shape[1:])
    cut = engine.cut(shape)
    channels = shape[0] if cut is None else cut.shape[0]
    where = "input" if layer is None else f"block {layer}"

    def collect(x: Tensor, what: str) -> dict[bool, ViewInputs]:
        return collect_both(engine, x, channels, batch, f"{where}: {what}", progress)

    fit = collect(s.fit[0], "fit")
    correct = fit[True].predicted == s.fit[1].numpy()
    clean = collect(s.clean, "clean")
    untrusted = {kind: collect(x, kind) for kind, x in s.untrusted.items() if len(x)}
    grey = shape[0] == 1
    return {
        cm: detection(
            fit[cm].take(correct), clean[cm], {k: z[cm] for k, z in untrusted.items()}, grey
        )
        for cm in (True, False)
    }


def verdict(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Whether a choice keeps detection (both views within ``MAX_AUROC_LOSS`` pooled) at a real
    saving (at most ``MAX_COST_RATIO`` of the input's cost at every batch size)."""
    losses = {}
    for view in VIEWS:
        mine, reference = row["auroc"][view]["pooled"], base["auroc"][view]["pooled"]
        losses[view] = None if mine is None or reference is None else round(reference - mine, 4)
    keeps = all(v is not None and v <= MAX_AUROC_LOSS for v in losses.values())
    saves = all(row[f"cost_ratio_b{b}"] <= MAX_COST_RATIO for b in BATCH_SIZES)
    return {
        "pooled_auroc_loss": losses,
        "keeps_detection": keeps,
        "saves": saves,
        "worth_it": keeps and saves,
    }


def run(
    name: str,
    data_dir: str | None = None,
    repo: str | None = None,
    n_fit: int = 2000,
    n_test: int = 500,
    pgd_steps: int = 40,
    repeats: int = 7,
    batch: int = 128,
    seed: int = 0,
    threads: int | None = 1,
    strategy: str = "auto",
    out: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every choice for model ``name``; print the table, write the JSON to ``out``.

    Args:
        threads: torch threads for the whole run (``None``: leave torch's setting).
        strategy: the engine's gradient strategy; ``"auto"`` measures them per batch size.

    Returns:
        The report (``out``'s content).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    s = setup(name, repo, data_dir, n_fit, n_test, pgd_steps, seed, batch, progress)
    s.strategy = strategy
    shape = tuple(s.clean.shape[1:])
    all_choices = choices(s.model, shape)
    cost = timings(s.model, all_choices, s.clean[: max(BATCH_SIZES)], repeats, strategy)
    rows = []
    for layer in dict.fromkeys(c.layer for c in all_choices):
        logger.info("detection with the saliency at %s", layer)
        found = measure_layer(s, layer, batch, progress)
        for c in (c for c in all_choices if c.layer == layer):
            rows.append(_row(s, c, cost[c.name], found[c.channel_max]))
    for row in rows[1:]:
        row["verdict"] = verdict(row, rows[0])
    report = {
        "model": name,
        "dataset": s.dataset,
        "command": _command(name, n_fit, n_test, pgd_steps, repeats, seed, threads, strategy),
        "n_fit": len(s.fit[0]),
        "n_test": len(s.clean),
        "untrusted": {kind: len(x) for kind, x in s.untrusted.items()},
        "eps": round(s.eps, 5),
        "pgd_steps": pgd_steps,
        "strategy": strategy,
        "rule": {"max_pooled_auroc_loss": MAX_AUROC_LOSS, "max_cost_ratio": MAX_COST_RATIO},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "choices": rows,
    }
    sys.stdout.write(format_table(report) + "\n")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _row(s: Setup, c: Choice, cost: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    engine = GradientEngine(s.model, c.options())
    cut = engine.cut(tuple(s.clean.shape[1:]))
    shape = tuple(s.clean.shape[1:]) if cut is None else cut.shape
    d = math.prod(shape[1:]) * (1 if c.channel_max else shape[0])
    return {
        "choice": c.name,
        "saliency_layer": c.layer,
        "channel_max": c.channel_max,
        "activation": list(shape),
        "map_length": d,
        **cost,
        "auroc": found,
    }


def _command(name: str, *values: Any) -> str:
    """The command line that makes the report (``run``'s arguments in its order)."""
    flags = ("--n-fit", "--n-test", "--pgd-steps", "--repeats", "--seed", "--threads", "--strategy")
    given = " ".join(f"{f} {v}" for f, v in zip(flags, values, strict=True) if v is not None)
    return f"gga lab saliency-layers {name} --data-dir DIR {given}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a markdown table: cost, pooled AUROC per view, and the verdict."""
    kinds = ", ".join(f"{k} {n}" for k, n in report["untrusted"].items())
    lines = [
        f"{report['model']} ({report['dataset']}): fit {report['n_fit']} clean training images, "
        f"test {report['n_test']} clean against {kinds}; "
        f"{report['machine']['torch_threads']} torch threads",
        "",
        "| saliency at | activation | D | ms/img b1 | x input | ms/img b32 | x input | "
        "gga-paper pooled | gga-csm pooled | worth it |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["choices"]:
        pooled = [_auroc_text(row["auroc"][v]["pooled"]) for v in VIEWS]
        worth = row.get("verdict", {}).get("worth_it")
        lines.append(
            f"| {row['choice']} | {'x'.join(map(str, row['activation']))} | {row['map_length']} "
            f"| {row['ms_per_image_b1']:.2f} | {row['cost_ratio_b1']:.2f} "
            f"| {row['ms_per_image_b32']:.2f} | {row['cost_ratio_b32']:.2f} "
            f"| {pooled[0]} | {pooled[1]} | {'-' if worth is None else 'yes' if worth else 'no'} |"
        )
    lines += ["", "AUROC per kind (gga-paper / gga-csm):", ""]
    kind_names = [*report["untrusted"], "pooled"]
    lines.append("| saliency at | " + " | ".join(kind_names) + " |")
    lines.append("|---|" + "---|" * len(kind_names))
    for row in report["choices"]:
        cells = ["/".join(_auroc_text(row["auroc"][v].get(k)) for v in VIEWS) for k in kind_names]
        lines.append(f"| {row['choice']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _auroc_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
