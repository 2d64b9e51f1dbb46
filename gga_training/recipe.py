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
        held_out_tail: the last N images of the training split are never trained on (nor
            validated on, nor drawn by ``train_limit``); for a derived data set whose last
            images are built from images of their own (two-digit MNIST's last 6,000 pairs, of
            500 digits no other pair uses), so that held-out images are new to the model.
    """

    train_limit: int = 0
    val_fraction: float = 0.1
    unlabelled: int = 0
    held_out_tail: int = 0


@dataclass(frozen=True)
class OptimSection:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    # "onecycle": linear warm-up from 0 to lr over ``peak`` of the run, then linear to 0
    # (the cyclic schedule of Wong et al.'s fast adversarial training).
    schedule: Literal["constant", "cosine", "step", "onecycle"] = "cosine"
    step_size: int = 10  # epochs between decays for the "step" schedule
    gamma: float = 0.1
    peak: float = 0.4  # where the "onecycle" schedule peaks, as a fraction of the run
    label_smoothing: float = 0.0
    patience: int = 0  # early stopping: epochs without a better validation accuracy (0 = off)
    # "sum" adds the per-example losses of a batch instead of averaging them, as the weight-decay
    # paper's small learning rate (5e-4) assumes; it scales the loss against the weight decay.
    loss_reduction: Literal["mean", "sum"] = "mean"


@dataclass(frozen=True)
class AugmentSection:
    """Data augmentation of each training batch (the uint8 images, before scaling to [0, 1]).

    Attributes:
        crop_padding: zero-pad each side by this many pixels, then crop a random window of the
            original size (He et al.'s CIFAR augmentation uses 4); 0 = off.
        hflip: mirror each image left-right with probability 1/2.
    """

    crop_padding: int = 0
    hflip: bool = False


@dataclass(frozen=True)
class RuntimeSection:
    """How training runs on this machine; none of it changes what is learned beyond rounding.

    Attributes:
        channels_last: keep images and convolution weights in NHWC memory order (about twice as
            fast on CPU for ResNet-20; see docs/training.md).
        compile: wrap the model in ``torch.compile`` for training.
    """

    channels_last: bool = False
    compile: bool = False


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
    """Adversarial training: FGSM-AT (Goodfellow et al.), PGD-AT (Madry et al.) or fast AT.

    The loss is ``alpha * CE(x) + (1 - alpha) * CE(x_adv)``; Madry's PGD-AT is ``alpha = 0``.
    ``"fgsm"`` and ``"pgd"`` craft the inputs in eval mode through ``attacks``; ``"fgsm-rs"``
    (Wong et al. 2020, "fast is better than free") starts from a uniformly random point of the
    eps ball and takes one signed step of ``step_size`` (0 = 1.25 eps), in train mode as the
    paper does, and skips the clean pass when ``alpha = 0``.

    Attributes:
        select_on: pick the best epoch by ``"clean"`` validation accuracy, or by accuracy under
            PGD (``select_steps`` steps, random start) on the first ``select_images`` validation
            images: it catches catastrophic overfitting, where fast AT suddenly loses its
            robustness to PGD while FGSM accuracy climbs.
    """

    method: Literal["fgsm", "pgd", "fgsm-rs"] = "fgsm"
    eps: float = 0.1
    alpha: float = 0.5
    steps: int = 7
    step_size: float = 0.0  # 0 = 2.5 * eps / steps (Madry et al.); fgsm-rs: 1.25 * eps
    select_on: Literal["clean", "pgd"] = "clean"
    select_images: int = 1000
    select_steps: int = 10


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
    augment: AugmentSection | None = None
    runtime: RuntimeSection | None = None
    vat: VATSection | None = None
    distillation: DistillationSection | None = None
    adversarial: AdversarialSection | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


_SECTIONS = {
    "data": DataSection,
    "optim": OptimSection,
    "augment": AugmentSection,
    "runtime": RuntimeSection,
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
    if recipe.adversarial and recipe.adversarial.method not in ("fgsm", "pgd", "fgsm-rs"):
        raise RecipeError(f"{source}: [adversarial] method must be 'fgsm', 'pgd' or 'fgsm-rs'")
    if recipe.adversarial and recipe.adversarial.select_on not in ("clean", "pgd"):
        raise RecipeError(f"{source}: [adversarial] select_on must be 'clean' or 'pgd'")
    if recipe.optim.schedule not in ("constant", "cosine", "step", "onecycle"):
        raise RecipeError(
            f"{source}: [optim] schedule must be 'constant', 'cosine', 'step' or 'onecycle'"
        )
    if not 0.0 < recipe.optim.peak < 1.0:
        raise RecipeError(f"{source}: [optim] peak must be in (0, 1)")
    if not 0.0 <= recipe.optim.label_smoothing < 1.0:
        raise RecipeError(f"{source}: [optim] label_smoothing must be in [0, 1)")
    if recipe.augment and recipe.augment.crop_padding < 0:
        raise RecipeError(f"{source}: [augment] crop_padding must be >= 0")
    if not 0.0 <= recipe.data.val_fraction < 1.0:
        raise RecipeError(f"{source}: [data] val_fraction must be in [0, 1)")
    if recipe.data.held_out_tail < 0:
        raise RecipeError(f"{source}: [data] held_out_tail must be >= 0")
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
