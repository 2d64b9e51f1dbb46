"""Train a classifier from a recipe and write a complete model folder.

Reads top to bottom like nanoGPT's train.py: data, model, optimiser, the loop, evaluation, saving.
Seeded and reproducible on one machine (same recipe, same torch build, same thread count) up
to float rounding: oneDNN may choose convolution kernels by buffer alignment, so the last bits
of a weight can differ between two runs.
The only module of ``models`` that may import ``attacks`` (adversarial training).
"""

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.architectures import build_model, config_to_dict
from models.card import ModelCard, Preprocessing
from models.data import load_dataset
from models.recipe import AdversarialSection, Recipe
from models.regularizers import distillation_loss, vat_loss
from models.repository import ModelRepository, load_model_folder, save_model_folder
from models.splits import training_split

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


def _lr_at(recipe: Recipe, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    o = recipe.optim
    if o.schedule == "cosine":
        progress = (epoch + step_in_epoch / steps_per_epoch) / o.epochs
        return 0.5 * o.lr * (1 + math.cos(math.pi * progress))
    if o.schedule == "step":
        return o.lr * o.gamma ** (epoch // o.step_size)
    return o.lr


def train(
    recipe: Recipe,
    out_dir: Path,
    data_dir: str | Path | None = None,
    repo: ModelRepository | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool = True,
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

    Returns:
        The written card and the per-epoch history.
    """
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    # ---- data: a seeded split of the training set into train / validation (/ unlabelled)
    train_set = load_dataset(recipe.dataset, "train", data_dir=data_dir)
    test_set = load_dataset(recipe.dataset, "test", data_dir=data_dir)
    split = training_split(recipe.data, recipe.seed, train_set.y, generator)
    x_all, y_all = train_set.float(), train_set.y
    x_train, y_train = x_all[split.train], y_all[split.train]
    x_val, y_val = x_all[split.validation], y_all[split.validation]
    x_unl = x_all[split.unlabelled]
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
    model = build_model(recipe.architecture, recipe.config).train()
    o = recipe.optim
    if o.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    teacher = _load_teacher(recipe.distillation.teacher, repo) if recipe.distillation else None

    # ---- the loop
    n_epochs = epochs if epochs is not None else o.epochs
    steps_per_epoch = math.ceil(len(x_train) / o.batch_size)
    best_acc, best_state, best_epoch, stale = -1.0, None, -1, 0
    history: list[dict[str, float]] = []
    step = 0
    started = time.monotonic()
    for epoch in range(n_epochs):
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
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(recipe, epoch, i, steps_per_epoch)

            logits = model(x)
            if teacher is not None:
                d = recipe.distillation
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = distillation_loss(logits, teacher_logits, y, d.temperature, d.weight)
            else:
                loss = F.cross_entropy(logits, y)
            if recipe.adversarial is not None:
                a = recipe.adversarial
                x_adv = _adversarial_batch(model, x, y, a)
                loss = a.alpha * loss + (1 - a.alpha) * F.cross_entropy(model(x_adv), y)
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

            running_loss += loss.item() * (1 if o.loss_reduction == "sum" else len(x))
            running_correct += (logits.argmax(1) == y).sum().item()
            seen += len(x)
            bar.set_postfix(loss=f"{running_loss / seen:.4f}", acc=f"{running_correct / seen:.3f}")
            if max_steps is not None and step >= max_steps:
                break

        val_acc = evaluate_accuracy(model, x_val, y_val) if len(x_val) else running_correct / seen
        record = {
            "epoch": epoch + 1,
            "train_loss": running_loss / seen,
            "train_accuracy": running_correct / seen,
            "val_accuracy": val_acc,
        }
        history.append(record)
        logger.info(
            "%s epoch %d: loss %.4f train acc %.4f val acc %.4f",
            recipe.name,
            epoch + 1,
            record["train_loss"],
            record["train_accuracy"],
            val_acc,
        )
        if val_acc > best_acc:
            best_acc, best_state, best_epoch, stale = (
                val_acc,
                copy.deepcopy(model.state_dict()),
                epoch + 1,
                0,
            )
        else:
            stale += 1
            if o.patience and stale >= o.patience:
                logger.info("early stop: no better validation accuracy for %d epochs", stale)
                break
        if max_steps is not None and step >= max_steps:
            break

    # ---- keep the best epoch, measure, write the folder
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    test_acc = evaluate_accuracy(model, x_test, y_test)
    logger.info("%s: test accuracy %.4f (best epoch %d)", recipe.name, test_acc, best_epoch)
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
        metrics=_metrics(test_acc, len(x_test), best_acc, best_epoch, step, started),
        description=recipe.description,
    )
    save_model_folder(out_dir, card, model)
    return TrainResult(card=card, history=history)


def _metrics(test_acc, n_test, val_acc, best_epoch, steps, started) -> dict[str, Any]:
    return {
        "test_accuracy": round(test_acc, 4),
        "test_images": n_test,
        "val_accuracy": round(val_acc, 4),
        "best_epoch": best_epoch,
        "steps": steps,
        "train_seconds": round(time.monotonic() - started, 1),
    }
