"""Train a classifier from a recipe and write a complete model folder.

Reads top to bottom like nanoGPT's train.py: ``train`` loads the data, builds the model and the
optimiser, finds where the run starts (epoch 0, or a checkpoint), runs the epochs and writes the
best epoch's folder. The loss of one batch is the step function of the recipe's training regime
(``gga_training.steps``: standard, distillation, FGSM/PGD adversarial training, fast AT, each with
VAT's term added or not), chosen once per run.

Seeded and reproducible on one machine (same recipe, same torch build, same thread count) up
to float rounding: oneDNN may choose convolution kernels by buffer alignment, so the last bits
of a weight can differ between two runs.

With a checkpoint path, the run writes its whole state after every epoch
(``gga_training.checkpoint``) and ``resume=True`` continues from it: the resumed run draws the
same shuffles, augmentations and random starts, so it ends with the weights an uninterrupted run
would have.
"""

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from attacks.pgd import PGD
from gga_training.augment import random_crop_flip
from gga_training.checkpoint import TrainState, check_same_run, load_checkpoint, save_checkpoint
from gga_training.recipe import Recipe
from gga_training.splits import training_split
from gga_training.steps import Step, StepContext, StepOutput, choose_step
from models.architectures import build_model, config_to_dict
from models.card import ModelCard, Preprocessing
from models.data import load_dataset
from models.repository import ModelRepository, load_model_folder, save_model_folder

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    card: ModelCard
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500):
    """Accuracy of ``model`` on float inputs ``x``; restores the model's training flag."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(len(x), 1)


def pgd_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, batch_size=250
) -> float:
    """Accuracy under l_inf PGD (random start, step eps / 4), with the attack's own seed.

    Used to pick the best epoch of adversarial training; seeded so that it neither depends on nor
    disturbs the training run's random state. Restores the model's training flag.
    """
    was_training = model.training
    attack = PGD(model, eps=eps, step_size=eps / 4, steps=steps, seed=0)
    correct = 0
    for i in range(0, len(x), batch_size):
        result = attack(x[i : i + batch_size], y[i : i + batch_size])
        correct += int((result.pred == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


# ---- setting up: data, model, optimiser, where the run starts


@dataclass
class _Data:
    """The run's images: the training ones uint8, scaled per batch; the others float in [0, 1]."""

    x_train: torch.Tensor  # (N, C, H, W) uint8
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_unl: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]  # (C, H, W), for the card
    class_names: tuple[str, ...]


def _load_data(recipe: Recipe, data_dir: str | Path | None, generator: torch.Generator) -> _Data:
    """A seeded split of the training set into train / validation (/ unlabelled), and the test set.

    Training images stay uint8 in memory and are scaled per batch (the same floats as scaling them
    all up front, at a quarter of the memory).
    """
    train_set = load_dataset(recipe.dataset, "train", data_dir=data_dir)
    test_set = load_dataset(recipe.dataset, "test", data_dir=data_dir)
    split = training_split(recipe.data, recipe.seed, train_set.y, generator)
    data = _Data(
        x_train=train_set.x[split.train],
        y_train=train_set.y[split.train],
        x_val=train_set.x[split.validation].float() / 255.0,
        y_val=train_set.y[split.validation],
        x_unl=train_set.x[split.unlabelled].float() / 255.0,
        x_test=test_set.float(),
        y_test=test_set.y,
        input_shape=tuple(int(v) for v in train_set.x.shape[1:]),
        class_names=tuple(train_set.class_names),
    )
    logger.info(
        "%s: %d train, %d validation, %d unlabelled, %d test images",
        recipe.name,
        len(data.x_train),
        len(data.x_val),
        len(data.x_unl),
        len(data.x_test),
    )
    return data


def _build_model(
    recipe: Recipe,
) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], torch.memory_format]:
    """The recipe's architecture in train mode, its training forward pass and memory format."""
    runtime = recipe.runtime
    memory_format = (
        torch.channels_last if runtime and runtime.channels_last else torch.contiguous_format
    )
    model = build_model(recipe.architecture, recipe.config).train()
    model = model.to(memory_format=memory_format)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if runtime and runtime.compile:
        forward = torch.compile(model)
    return model, forward, memory_format


def _build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    o = recipe.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
        )
    return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def _load_teacher(reference: str, repo: ModelRepository | None) -> nn.Module:
    path = Path(reference)
    loaded = (
        load_model_folder(path) if path.is_dir() else (repo or ModelRepository()).load(reference)
    )
    return loaded.module.eval()


def _no_best() -> dict[str, Any]:
    return {"accuracy": -1.0, "val_accuracy": -1.0, "epoch": -1, "stale": 0, "state": None}


@dataclass
class _Progress:
    """Where the run stands after an epoch; a checkpoint saves it beside the tensors.

    ``best`` is ``TrainState.best``; ``elapsed_before`` the training seconds of earlier calls
    (of an interrupted run).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_no_best)
    epoch: int = 0
    step: int = 0
    elapsed_before: float = 0.0
    stopped_early: bool = False


def _load_resumed(checkpoint: Path | None, recipe: Recipe, n_epochs: int) -> TrainState:
    if checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    resumed = load_checkpoint(checkpoint)
    check_same_run(checkpoint, resumed, recipe, n_epochs)
    return resumed


def _restore(
    resumed: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> _Progress:
    """Put an interrupted run's weights, optimiser and random states back; say where it stood."""
    model.load_state_dict(resumed.model)
    optimizer.load_state_dict(resumed.optimizer)
    generator.set_state(resumed.generator)
    torch.set_rng_state(resumed.torch_rng)
    return _Progress(
        history=list(resumed.history),
        best=dict(resumed.best),
        epoch=resumed.epoch,
        step=resumed.step,
        elapsed_before=resumed.elapsed,
        stopped_early=resumed.stopped_early,
    )


@dataclass
class _Run:
    """The pieces of one ``train`` call that the epoch helpers share, set up once."""

    recipe: Recipe
    n_epochs: int
    data: _Data
    ctx: StepContext
    step_fn: Step
    optimizer: torch.optim.Optimizer
    memory_format: torch.memory_format
    max_steps: int | None
    show_progress: bool
    # This call's clock and steps: the time-left estimates and the card's train_seconds.
    started: float = field(default_factory=time.monotonic)
    steps_this_call: int = 0

    def elapsed(self, state: _Progress) -> float:
        return state.elapsed_before + time.monotonic() - self.started

    def out_of_steps(self, state: _Progress) -> bool:
        return self.max_steps is not None and state.step >= self.max_steps


def train(
    recipe: Recipe,
    out_dir: Path,
    data_dir: str | Path | None = None,
    repo: ModelRepository | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[TrainState], None] | None = None,
) -> TrainResult:
    """Train the model a recipe describes and write its folder to ``out_dir``.

    Args:
        recipe: the validated recipe.
        out_dir: the model folder to write (card.json, weights.safetensors).
        data_dir: where the data sets are (else ``$GGA_DATA_DIR``).
        repo: repository to resolve a distillation teacher by name.
        epochs: override the recipe's epoch count (quick runs, tests).
        max_steps: stop after this many optimiser steps in total (tests).
        progress: show a tqdm bar per epoch.
        checkpoint: write the run's state to this file after every epoch (None: no checkpoints).
        resume: continue the run saved in ``checkpoint`` instead of starting afresh.
        on_epoch_end: called with the run's state after each epoch's checkpoint is written.

    Returns:
        The written card and the per-epoch history.

    Raises:
        CheckpointError: ``resume`` with no checkpoint, a corrupt one, or one written by another
            recipe or epoch count; the checkpoint file is left untouched.
        RecipeError: the recipe's regime has no step function.
    """
    step_fn = choose_step(recipe)
    n_epochs = epochs if epochs is not None else recipe.optim.epochs
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    resumed = _load_resumed(checkpoint, recipe, n_epochs) if resume else None

    # ---- set up. The split, the initial weights and building the teacher draw random numbers in
    # this order from the seeded generators: the order is part of the run, and of its checkpoints.
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    data = _load_data(recipe, data_dir, generator)
    model, forward, memory_format = _build_model(recipe)
    optimizer = _build_optimizer(recipe, model)
    teacher = _load_teacher(recipe.distillation.teacher, repo) if recipe.distillation else None
    ctx = StepContext(recipe, model, forward, generator, teacher, data.x_unl)
    state = _Progress()
    if resumed is not None:
        state = _restore(resumed, model, optimizer, generator)
        logger.info("%s: resuming after epoch %d/%d", recipe.name, state.epoch, n_epochs)
    run = _Run(recipe, n_epochs, data, ctx, step_fn, optimizer, memory_format, max_steps, progress)

    # ---- the loop: train an epoch, validate, keep the best weights, checkpoint
    for epoch in range(n_epochs if state.stopped_early else state.epoch, n_epochs):
        train_loss, train_accuracy = _train_epoch(run, state, epoch)
        state.epoch = epoch + 1
        record, score = _validate(run, state.epoch, train_loss, train_accuracy)
        state.history.append(record)
        elapsed = run.elapsed(state)
        _log_epoch(run, record, elapsed)
        _keep_best(run, state, record, score)
        if checkpoint is not None:
            saved = _save_checkpoint(run, state, checkpoint, elapsed)
            if on_epoch_end is not None:
                on_epoch_end(saved)
        if state.stopped_early or run.out_of_steps(state):
            break

    # ---- keep the best epoch, measure it, write the folder
    card = _write_folder(run, state, out_dir)
    return TrainResult(card=card, history=state.history)


# ---- the loop's pieces


def _train_epoch(run: _Run, state: _Progress, epoch: int) -> tuple[float, float]:
    """One pass over a fresh shuffle of the training set, or until ``max_steps``.

    Returns:
        The mean loss and accuracy over the batches trained on; the accuracy counts the step
        function's logits (of the augmented inputs, and of the adversarial ones under fast AT).
    """
    o, augment, ctx = run.recipe.optim, run.recipe.augment, run.ctx
    x_train, y_train = run.data.x_train, run.data.y_train
    steps_per_epoch = math.ceil(len(x_train) / o.batch_size)
    ctx.model.train()
    perm = torch.randperm(len(x_train), generator=ctx.generator)
    bar = tqdm(
        range(steps_per_epoch),
        desc=f"{run.recipe.name} epoch {epoch + 1}/{run.n_epochs}",
        disable=not run.show_progress,
        leave=False,
    )
    running_loss, running_correct, seen = 0.0, 0, 0
    for i in bar:
        idx = perm[i * o.batch_size : (i + 1) * o.batch_size]
        x, y = x_train[idx], y_train[idx]
        if augment is not None:
            x = random_crop_flip(x, augment.crop_padding, augment.hflip, ctx.generator)
        # uint8 (B, C, H, W) -> float in [0, 1], in the model's memory format
        x = (x.to(torch.float32) / 255.0).contiguous(memory_format=run.memory_format)
        loss, logits = _optimizer_step(run, x, y, _lr_at(run.recipe, epoch, i, steps_per_epoch))
        state.step += 1
        run.steps_this_call += 1

        running_loss += loss.item() * (1 if o.loss_reduction == "sum" else len(x))
        running_correct += (logits.argmax(1) == y).sum().item()
        seen += len(x)
        per_step = (time.monotonic() - run.started) / run.steps_this_call
        steps_left = (run.n_epochs - epoch) * steps_per_epoch - i - 1
        bar.set_postfix(
            loss=f"{running_loss / seen:.4f}",
            acc=f"{running_correct / seen:.3f}",
            left=_format_seconds(per_step * steps_left),
        )
        if run.out_of_steps(state):
            break
    return running_loss / seen, running_correct / seen


def _optimizer_step(run: _Run, x: torch.Tensor, y: torch.Tensor, lr: float) -> StepOutput:
    """One update at learning rate ``lr`` on the regime's loss; returns the loss and logits."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss, logits = run.step_fn(run.ctx, x, y)
    if run.recipe.optim.loss_reduction == "sum":
        loss = loss * len(x)  # every step function's loss is a batch mean
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return loss, logits


def _lr_at(recipe: Recipe, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    o = recipe.optim
    progress = (epoch + step_in_epoch / steps_per_epoch) / o.epochs
    if o.schedule == "cosine":
        return 0.5 * o.lr * (1 + math.cos(math.pi * progress))
    if o.schedule == "onecycle":
        if progress < o.peak:
            return o.lr * progress / o.peak
        return o.lr * max(0.0, (1 - progress) / (1 - o.peak))
    if o.schedule == "step":
        return o.lr * o.gamma ** (epoch // o.step_size)
    return o.lr


def _validate(
    run: _Run, epoch: int, train_loss: float, train_accuracy: float
) -> tuple[dict[str, float], float]:
    """The history record of epoch ``epoch`` (1-based) and its score for picking the best epoch.

    The score is the validation accuracy, or the PGD accuracy with ``select_on = "pgd"``; with no
    validation images, the training accuracy.
    """
    model, data, adv = run.ctx.model, run.data, run.recipe.adversarial
    val_acc = (
        evaluate_accuracy(model, data.x_val, data.y_val) if len(data.x_val) else train_accuracy
    )
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_accuracy": val_acc,
    }
    score = val_acc
    if adv is not None and adv.select_on == "pgd" and len(data.x_val):
        n = adv.select_images
        score = pgd_accuracy(model, data.x_val[:n], data.y_val[:n], adv.eps, adv.select_steps)
        record["val_pgd_accuracy"] = score
    record["lr"] = run.optimizer.param_groups[0]["lr"]
    return record, score


def _log_epoch(run: _Run, record: dict[str, float], elapsed: float) -> None:
    epoch, pgd = record["epoch"], record.get("val_pgd_accuracy")
    logger.info(
        "%s epoch %d/%d: loss %.4f train acc %.4f val acc %.4f%s, %s left",
        run.recipe.name,
        epoch,
        run.n_epochs,
        record["train_loss"],
        record["train_accuracy"],
        record["val_accuracy"],
        f" val pgd acc {pgd:.4f}" if pgd is not None else "",
        _format_seconds(elapsed / epoch * (run.n_epochs - epoch)),
    )


def _keep_best(run: _Run, state: _Progress, record: dict[str, float], score: float) -> None:
    """Keep the weights of the best-scoring epoch; stop early after ``patience`` epochs without."""
    if score > state.best["accuracy"]:
        state.best = {
            "accuracy": score,
            "val_accuracy": record["val_accuracy"],
            "epoch": state.epoch,
            "stale": 0,
            "state": copy.deepcopy(run.ctx.model.state_dict()),
        }
        return
    state.best["stale"] += 1
    patience = run.recipe.optim.patience
    if patience and state.best["stale"] >= patience:
        logger.info("early stop: no better validation score for %d epochs", state.best["stale"])
        state.stopped_early = True


def _save_checkpoint(run: _Run, state: _Progress, path: Path, elapsed: float) -> TrainState:
    saved = TrainState(
        recipe=run.recipe.to_dict(),
        epochs=run.n_epochs,
        epoch=state.epoch,
        step=state.step,
        model=run.ctx.model.state_dict(),
        optimizer=run.optimizer.state_dict(),
        generator=run.ctx.generator.get_state(),
        torch_rng=torch.get_rng_state(),
        history=state.history,
        best=state.best,
        elapsed=elapsed,
        stopped_early=state.stopped_early,
    )
    save_checkpoint(path, saved)
    return saved


def _write_folder(run: _Run, state: _Progress, out_dir: Path) -> ModelCard:
    """Load the best epoch's weights, measure them on the test set, write card and weights."""
    recipe, data, adv = run.recipe, run.data, run.recipe.adversarial
    model = run.ctx.model
    if state.best["state"] is not None:
        model.load_state_dict(state.best["state"])
    model = model.to(memory_format=torch.contiguous_format).eval()
    test_acc = evaluate_accuracy(model, data.x_test, data.y_test)
    best_epoch = state.best["epoch"]
    logger.info("%s: test accuracy %.4f (best epoch %d)", recipe.name, test_acc, best_epoch)
    elapsed = run.elapsed(state)
    n_test, epochs_run = len(data.x_test), len(state.history)
    metrics = _metrics(test_acc, n_test, state.best, state.step, elapsed, epochs_run)
    if adv is not None and adv.select_on == "pgd":
        metrics["val_pgd_accuracy"] = round(state.best["accuracy"], 4)
        metrics["selected_on"] = (
            f"PGD-{adv.select_steps} accuracy on {adv.select_images} validation images"
        )
    card = ModelCard(
        name=recipe.name,
        version=recipe.version,
        architecture=recipe.architecture,
        config=config_to_dict(model.config),
        input_shape=data.input_shape,
        class_names=data.class_names,
        dataset=recipe.dataset,
        preprocessing=Preprocessing(**recipe.preprocessing),
        recipe=recipe.to_dict(),
        metrics=metrics,
        description=recipe.description,
    )
    save_model_folder(out_dir, card, model)
    return card


def _metrics(test_acc, n_test, best, steps, elapsed, epochs_run) -> dict[str, Any]:
    metrics = {
        "test_accuracy": round(test_acc, 4),
        "test_images": n_test,
        "val_accuracy": round(best["val_accuracy"], 4),
        "best_epoch": best["epoch"],
        "steps": steps,
        "train_seconds": round(elapsed, 1),
    }
    if epochs_run and elapsed > 0:
        metrics["epochs_per_hour"] = round(3600 * epochs_run / elapsed, 2)
        metrics["train_device"] = f"cpu, {torch.get_num_threads()} threads"
    return metrics


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
