"""Train a classifier from a recipe and write a complete model folder.

Reads top to bottom like nanoGPT's train.py: data, model, optimiser, the loop, evaluation, saving.
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
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gga_training.augment import random_crop_flip
from gga_training.checkpoint import TrainState, check_same_run, load_checkpoint, save_checkpoint
from gga_training.recipe import AdversarialSection, Recipe
from gga_training.regularizers import distillation_loss, vat_loss
from gga_training.splits import training_split
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
    from attacks.pgd import PGD

    was_training = model.training
    attack = PGD(model, eps=eps, step_size=eps / 4, steps=steps, seed=0)
    correct = 0
    for i in range(0, len(x), batch_size):
        result = attack(x[i : i + batch_size], y[i : i + batch_size])
        correct += int((result.pred == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


def _load_teacher(reference: str, repo: ModelRepository | None) -> nn.Module:
    path = Path(reference)
    loaded = (
        load_model_folder(path) if path.is_dir() else (repo or ModelRepository()).load(reference)
    )
    return loaded.module.eval()


def _adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, section: AdversarialSection
) -> torch.Tensor:
    # Imported here: adversarial training is the one place where models depends on attacks.
    from attacks.fgsm import FGSM
    from attacks.pgd import PGD

    if section.method == "fgsm":
        attack = FGSM(model, eps=section.eps)
    else:
        step = section.step_size or 2.5 * section.eps / section.steps
        attack = PGD(model, eps=section.eps, step_size=step, steps=section.steps)
    return attack(x, y).x_adv.detach()


def _fgsm_random_start(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    section: AdversarialSection,
    generator: torch.Generator,
) -> torch.Tensor:
    """Wong et al.'s fast-AT input: a uniform random start in the eps ball, one signed step.

    Runs the model as it is (train mode, as the paper does: BatchNorm sees the batch); only the
    input gradient is taken, the weights' gradients are not touched.
    """
    eps = section.eps
    step = section.step_size or 1.25 * eps
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    delta = ((x + delta).clamp(0.0, 1.0) - x).requires_grad_(True)
    loss = F.cross_entropy(forward(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0)


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


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


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
    """
    n_epochs = epochs if epochs is not None else recipe.optim.epochs
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    resumed = None
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        resumed = load_checkpoint(checkpoint)
        check_same_run(checkpoint, resumed, recipe, n_epochs)

    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    # ---- data: a seeded split of the training set into train / validation (/ unlabelled).
    # Images stay uint8 in memory and are scaled per batch (the same floats as scaling them all
    # up front, at a quarter of the memory).
    train_set = load_dataset(recipe.dataset, "train", data_dir=data_dir)
    test_set = load_dataset(recipe.dataset, "test", data_dir=data_dir)
    split = training_split(recipe.data, recipe.seed, train_set.y, generator)
    x_train, y_train = train_set.x[split.train], train_set.y[split.train]
    x_val, y_val = train_set.x[split.validation].float() / 255.0, train_set.y[split.validation]
    x_unl = train_set.x[split.unlabelled].float() / 255.0
    x_test, y_test = test_set.float(), test_set.y
    logger.info(
        "%s: %d train, %d validation, %d unlabelled, %d test images",
        recipe.name,
        len(x_train),
        len(x_val),
        len(x_unl),
        len(x_test),
    )

    # ---- model, optimiser, optional teacher
    runtime = recipe.runtime
    memory_format = (
        torch.channels_last if runtime and runtime.channels_last else torch.contiguous_format
    )
    model = build_model(recipe.architecture, recipe.config).train()
    model = model.to(memory_format=memory_format)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if runtime and runtime.compile:
        forward = torch.compile(model)
    o = recipe.optim
    if o.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    teacher = _load_teacher(recipe.distillation.teacher, repo) if recipe.distillation else None
    adv = recipe.adversarial
    augment = recipe.augment

    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=o.label_smoothing)

    # ---- where the run starts: epoch 0, or the state of an interrupted run
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {
        "accuracy": -1.0,
        "val_accuracy": -1.0,
        "epoch": -1,
        "stale": 0,
        "state": None,
    }
    start_epoch, step, elapsed_before, stopped_early = 0, 0, 0.0, False
    if resumed is not None:
        model.load_state_dict(resumed.model)
        optimizer.load_state_dict(resumed.optimizer)
        generator.set_state(resumed.generator)
        torch.set_rng_state(resumed.torch_rng)
        history, best = list(resumed.history), dict(resumed.best)
        start_epoch, step = resumed.epoch, resumed.step
        elapsed_before, stopped_early = resumed.elapsed, resumed.stopped_early
        logger.info("%s: resuming after epoch %d/%d", recipe.name, start_epoch, n_epochs)

    # ---- the loop
    steps_per_epoch = math.ceil(len(x_train) / o.batch_size)
    started = time.monotonic()
    steps_this_call = 0
    last_epoch = n_epochs if stopped_early else start_epoch
    for epoch in range(last_epoch, n_epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=generator)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{recipe.name} epoch {epoch + 1}/{n_epochs}",
            disable=not progress,
            leave=False,
        )
        running_loss, running_correct, seen = 0.0, 0, 0
        for i in bar:
            idx = perm[i * o.batch_size : (i + 1) * o.batch_size]
            x, y = x_train[idx], y_train[idx]
            if augment is not None:
                x = random_crop_flip(x, augment.crop_padding, augment.hflip, generator)
            x = (x.to(torch.float32) / 255.0).contiguous(memory_format=memory_format)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(recipe, epoch, i, steps_per_epoch)

            if adv is not None and adv.method == "fgsm-rs":
                x_adv = _fgsm_random_start(forward, x, y, adv, generator)
                logits = forward(x_adv)
                loss = cross_entropy(logits, y)
                if adv.alpha:
                    loss = adv.alpha * cross_entropy(forward(x), y) + (1 - adv.alpha) * loss
            else:
                logits = forward(x)
                if teacher is not None:
                    d = recipe.distillation
                    with torch.no_grad():
                        teacher_logits = teacher(x)
                    loss = distillation_loss(logits, teacher_logits, y, d.temperature, d.weight)
                else:
                    loss = cross_entropy(logits, y)
                if adv is not None:
                    x_adv = _adversarial_batch(model, x, y, adv)
                    loss = adv.alpha * loss + (1 - adv.alpha) * cross_entropy(forward(x_adv), y)
            if recipe.vat is not None:
                v = recipe.vat
                vat_inputs, vat_logits = x, logits
                if len(x_unl):
                    # Unlabelled inputs join the VAT term only: it needs no labels.
                    u = x_unl[torch.randint(len(x_unl), (len(x),), generator=generator)]
                    vat_inputs = torch.cat([x, u])
                    vat_logits = torch.cat([logits, model(u)])
                loss = loss + v.alpha * vat_loss(
                    model, vat_inputs, vat_logits, v.eps, v.xi, v.power_iterations
                )

            if o.loss_reduction == "sum":
                loss = loss * len(x)  # every term above is a batch mean
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            steps_this_call += 1

            running_loss += loss.item() * (1 if o.loss_reduction == "sum" else len(x))
            running_correct += (logits.argmax(1) == y).sum().item()
            seen += len(x)
            per_step = (time.monotonic() - started) / steps_this_call
            steps_left = (n_epochs - epoch) * steps_per_epoch - i - 1
            bar.set_postfix(
                loss=f"{running_loss / seen:.4f}",
                acc=f"{running_correct / seen:.3f}",
                left=_format_seconds(per_step * steps_left),
            )
            if max_steps is not None and step >= max_steps:
                break

        val_acc = evaluate_accuracy(model, x_val, y_val) if len(x_val) else running_correct / seen
        record = {
            "epoch": epoch + 1,
            "train_loss": running_loss / seen,
            "train_accuracy": running_correct / seen,
            "val_accuracy": val_acc,
        }
        score = val_acc
        if adv is not None and adv.select_on == "pgd" and len(x_val):
            n = adv.select_images
            score = pgd_accuracy(model, x_val[:n], y_val[:n], adv.eps, adv.select_steps)
            record["val_pgd_accuracy"] = score
        record["lr"] = optimizer.param_groups[0]["lr"]
        history.append(record)
        elapsed = elapsed_before + time.monotonic() - started
        epochs_left = n_epochs - epoch - 1
        logger.info(
            "%s epoch %d/%d: loss %.4f train acc %.4f val acc %.4f%s, %s left",
            recipe.name,
            epoch + 1,
            n_epochs,
            record["train_loss"],
            record["train_accuracy"],
            val_acc,
            f" val pgd acc {score:.4f}" if "val_pgd_accuracy" in record else "",
            _format_seconds(elapsed / (epoch + 1) * epochs_left),
        )
        if score > best["accuracy"]:
            best = {
                "accuracy": score,
                "val_accuracy": val_acc,
                "epoch": epoch + 1,
                "stale": 0,
                "state": copy.deepcopy(model.state_dict()),
            }
        else:
            best["stale"] += 1
            if o.patience and best["stale"] >= o.patience:
                logger.info("early stop: no better validation score for %d epochs", best["stale"])
                stopped_early = True
        stop_for_steps = max_steps is not None and step >= max_steps
        if checkpoint is not None:
            state = TrainState(
                recipe=recipe.to_dict(),
                epochs=n_epochs,
                epoch=epoch + 1,
                step=step,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                generator=generator.get_state(),
                torch_rng=torch.get_rng_state(),
                history=history,
                best=best,
                elapsed=elapsed,
                stopped_early=stopped_early,
            )
            save_checkpoint(checkpoint, state)
            if on_epoch_end is not None:
                on_epoch_end(state)
        if stopped_early or stop_for_steps:
            break

    # ---- keep the best epoch, measure, write the folder
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model = model.to(memory_format=torch.contiguous_format).eval()
    test_acc = evaluate_accuracy(model, x_test, y_test)
    logger.info("%s: test accuracy %.4f (best epoch %d)", recipe.name, test_acc, best["epoch"])
    elapsed = elapsed_before + time.monotonic() - started
    metrics = _metrics(test_acc, len(x_test), best, step, elapsed, len(history))
    if adv is not None and adv.select_on == "pgd":
        metrics["val_pgd_accuracy"] = round(best["accuracy"], 4)
        metrics["selected_on"] = (
            f"PGD-{adv.select_steps} accuracy on {adv.select_images} validation images"
        )
    card = ModelCard(
        name=recipe.name,
        version=recipe.version,
        architecture=recipe.architecture,
        config=config_to_dict(model.config),
        input_shape=tuple(int(v) for v in train_set.x.shape[1:]),
        class_names=tuple(train_set.class_names),
        dataset=recipe.dataset,
        preprocessing=Preprocessing(**recipe.preprocessing),
        recipe=recipe.to_dict(),
        metrics=metrics,
        description=recipe.description,
    )
    save_model_folder(out_dir, card, model)
    return TrainResult(card=card, history=history)


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
