"""Model folders on disk and the repository that holds them.

A model folder holds ``card.json`` and ``weights.safetensors`` (and optionally ``model.onnx`` and
``detector.json``). A repository is a folder of model folders; the default one ships inside this
package at ``models/zoo``. Loading checks the card against the weights (hash, then names and shapes)
and says what is wrong, so a half-copied or mismatched folder never serves.
"""

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.architectures import build_model
from models.card import CARD_FILE, IMPORTED, WEIGHTS_FILE, ModelCard, sha256_file
from models.errors import ModelLoadError, ModelNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_REPOSITORY = Path(__file__).parent / "zoo"


@dataclass
class LoadedModel:
    """A model ready to use: its module (eval mode, CPU), its card and its folder."""

    card: ModelCard
    module: nn.Module
    path: Path


def save_model_folder(folder: Path, card: ModelCard, module: nn.Module) -> ModelCard:
    """Write ``weights.safetensors`` and ``card.json`` into ``folder``.

    The card's ``weights_sha256`` and ``created_at`` are filled in here, so a card on disk always
    describes the weights beside it.

    Args:
        folder: target folder, created if missing.
        card: the card; its hash and creation time are overwritten.
        module: the model whose ``state_dict`` is saved (tensors made contiguous, on CPU).

    Returns:
        The card as written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    # One metadata key: safetensors writes its metadata map in hash order, which varies from
    # process to process, so two keys made the same weights hash differently now and then.
    save_file(state, str(weights), metadata={"model": f"{card.name} {card.version}"})
    card.weights_sha256 = sha256_file(weights)
    card.created_at = card.created_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    card.save(folder)
    return card


def load_model_folder(folder: Path) -> LoadedModel:
    """Load and validate one model folder.

    An imported model (``architecture`` "imported") is read by ``models.imported.loader``,
    which checks its file's hash the same way.

    Raises:
        ModelLoadError: the card is missing or malformed, the weights file is missing, its hash
            differs from the card's, or its tensors do not fit the architecture the card names.
    """
    folder = Path(folder)
    card = ModelCard.load(folder)
    if card.architecture == IMPORTED:
        # A user's file (ONNX, torch.export, TorchScript): no architecture of ours to rebuild.
        from models.imported.loader import load_imported

        module = load_imported(folder, card)
        _check_output_size(card, module, folder)
        return LoadedModel(card=card, module=module, path=folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{folder}: {WEIGHTS_FILE} is missing")
    actual = sha256_file(weights)
    if card.weights_sha256 and actual != card.weights_sha256:
        raise ModelLoadError(
            f"{weights}: sha256 {actual[:12]}… does not match the card's "
            f"{card.weights_sha256[:12]}…; the weights were changed or replaced: "
            "restore them or retrain the model"
        )
    module = build_model(card.architecture, card.config)
    try:
        state = load_file(str(weights))
    except SafetensorError as err:
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({err})") from err
    _check_state(module, state, weights)
    module.load_state_dict(state, strict=True)
    module.eval()
    for p in module.parameters():
        # Served models are never trained in place; frozen parameters also spare the gradient
        # engine from computing weight gradients.
        p.requires_grad_(False)
    _check_output_size(card, module, folder)
    return LoadedModel(card=card, module=module, path=folder)


def _check_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs architecture {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}")
    if wrong:
        problems.append("shape mismatch " + "; ".join(wrong[:5]))
    if problems:
        raise ModelLoadError(
            f"{source}: weights do not fit the card's architecture: {', '.join(problems)}"
        )


def _check_output_size(card: ModelCard, module: nn.Module, folder: Path) -> None:
    with torch.no_grad():
        out = module(torch.zeros(1, *card.input_shape))
    if out.shape != (1, card.num_classes):
        raise ModelLoadError(
            f"{folder}: model outputs {tuple(out.shape[1:])} logits but the card lists "
            f"{card.num_classes} class names"
        )


class ModelRepository:
    """A folder of model folders.

    Args:
        root: the repository folder; ``None`` means ``$GGA_REPO`` if set, else the shipped zoo.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get("GGA_REPO") or DEFAULT_REPOSITORY
        self.root = Path(root)
        if not self.root.is_dir():
            raise ModelNotFoundError(f"model repository {self.root} does not exist")

    def names(self) -> list[str]:
        """Names of the model folders (those holding a card), sorted.

        Hidden folders are left out: ``gga import`` writes a folder under a hidden name and
        renames it into place when complete.
        """
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / CARD_FILE).is_file()
        )

    def path(self, name: str) -> Path:
        folder = self.root / name
        if "/" in name or name.startswith(".") or not (folder / CARD_FILE).is_file():
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(
                f"no model {name!r} in repository {self.root}; available: {known}"
            )
        return folder

    def card(self, name: str) -> ModelCard:
        return ModelCard.load(self.path(name))

    def load(self, name: str) -> LoadedModel:
        return load_model_folder(self.path(name))
