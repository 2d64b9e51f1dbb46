"""Training recipes: every hyper-parameter of a zoo model, in a TOML file under ``recipes/``.

A recipe is read into frozen dataclasses, so a typo is an error instead of a silently ignored
option, and the whole recipe is written into the trained model's card.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.errors import RecipeError


@dataclass(frozen=True)
class DataSection:
    """Which data trains the model.

    Attributes:
        train_limit: train on a seeded, class-balanced subset of N training images (0 = all).
        val_fraction: part of the training split held out for validation and early stopping.
        unlabelled: training images whose labels are dropped; only VAT uses them.
    """

    train_limit: int = 0
    val_fraction: float = 0.1
    unlabelled: int = 0


@dataclass(frozen=True)
class OptimSection:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    step_size: int = 10  # epochs between decays for the "step" schedule
    gamma: float = 0.1
    patience: int = 0  # early stopping: epochs without a better validation accuracy (0 = off)
    # "sum" adds the per-example losses of a batch instead of averaging them, as the weight-decay
    # paper's small learning rate (5e-4) assumes; it scales the loss against the weight decay.
    loss_reduction: Literal["mean", "sum"] = "mean"


@dataclass(frozen=True)
class VATSection:
    """Virtual adversarial training (Miyato et al.): loss += alpha * KL(p(x) || p(x + r_vadv))."""

    eps: float = 2.0
    xi: float = 1e-6
    alpha: float = 1.0
    power_iterations: int = 1


@dataclass(frozen=True)
class DistillationSection:
    """Knowledge distillation (Hinton et al.) from a teacher model folder or zoo name."""

    teacher: str = ""
    temperature: float = 20.0
    weight: float = 0.9  # share of the soft-target loss; 1 - weight goes to the true labels


@dataclass(frozen=True)
class AdversarialSection:
    """Adversarial training: FGSM-AT (Goodfellow et al.) or PGD-AT (Madry et al.).

    The loss is ``alpha * CE(x) + (1 - alpha) * CE(x_adv)``; Madry's PGD-AT is ``alpha = 0``.
    """

    method: Literal["fgsm", "pgd"] = "fgsm"
    eps: float = 0.1
    alpha: float = 0.5
    steps: int = 7
    step_size: float = 0.0  # 0 = 2.5 * eps / steps (Madry et al.)


@dataclass(frozen=True)
class Recipe:
    name: str
    architecture: str
    dataset: str
    version: str = "1.0.0"
    description: str = ""
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    vat: VATSection | None = None
    distillation: DistillationSection | None = None
    adversarial: AdversarialSection | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


_SECTIONS = {
    "data": DataSection,
    "optim": OptimSection,
    "vat": VATSection,
    "distillation": DistillationSection,
    "adversarial": AdversarialSection,
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"{where}: unknown option(s) {unknown}; known: {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as err:
        raise RecipeError(f"{where}: {err}") from err


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a parsed recipe; ``source`` names the file in errors."""
    values = dict(data)
    for section, cls in _SECTIONS.items():
        if section in values:
            if not isinstance(values[section], dict):
                raise RecipeError(f"{source}: [{section}] must be a table")
            values[section] = _build(cls, values[section], f"{source} [{section}]")
    recipe = _build(Recipe, values, source)
    if recipe.optim.optimizer not in ("sgd", "adam"):
        raise RecipeError(f"{source}: optimizer must be 'sgd' or 'adam'")
    if recipe.adversarial and recipe.adversarial.method not in ("fgsm", "pgd"):
        raise RecipeError(f"{source}: [adversarial] method must be 'fgsm' or 'pgd'")
    if not 0.0 <= recipe.data.val_fraction < 1.0:
        raise RecipeError(f"{source}: [data] val_fraction must be in [0, 1)")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a TOML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from err
    return recipe_from_dict(data, source=str(path))
