"""The registry of architectures: a name in a card maps to a config dataclass and a module."""

import dataclasses
from typing import Any

from torch import nn

from models.cnn import CompactCNN, CompactCNNConfig
from models.errors import ModelLoadError
from models.lenet import LeNet, LeNetConfig
from models.resnet import ResNet, ResNetConfig
from models.resnet_imagenet import ImageNetResNet, ImageNetResNetConfig

ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    "lenet": (LeNetConfig, LeNet),
    "compact-cnn": (CompactCNNConfig, CompactCNN),
    "resnet": (ResNetConfig, ResNet),
    "resnet-imagenet": (ImageNetResNetConfig, ImageNetResNet),
}


def make_config(architecture: str, config: dict[str, Any] | None = None) -> Any:
    """Build the config dataclass of ``architecture`` from a plain dict (a card's or a recipe's).

    Lists become tuples, so a config read back from JSON equals the one written.
    """
    if architecture not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelLoadError(f"unknown architecture {architecture!r}; known: {known}")
    config_cls, _ = ARCHITECTURES[architecture]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    given = dict(config or {})
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ModelLoadError(
            f"unknown {architecture} config field(s) {unknown}; known: {sorted(fields)}"
        )
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return config_cls(**given)


def build_model(architecture: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model of ``architecture``, in eval mode."""
    cfg = make_config(architecture, config)
    _, module_cls = ARCHITECTURES[architecture]
    return module_cls(cfg).eval()


def config_to_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready form of a config dataclass (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }
