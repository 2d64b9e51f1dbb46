"""The model card: everything needed to rebuild, check and describe a model folder.

A card is plain JSON (``card.json``) beside ``weights.safetensors``. It names the architecture and
its config (so the module can be rebuilt without code changes), how raw images are turned into the
model's input, the recipe it was trained with and what was measured on it.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.errors import ModelLoadError

CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
IMPORTED = "imported"  # the architecture of a user's model file (models/imported/)
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the model's input.

    Attributes:
        color_mode: PIL mode the image is converted to first ("L" grey or "RGB"): a colour
            image sent to a grey model becomes its BT.601 luma, a grey image sent to a colour
            model has its one channel repeated to three.
        resize: resize images of another size to the input size (bilinear) instead of refusing them.
        resize_mode: how an image of another size is resized: ``"stretch"`` scales the whole
            image to the input size (the aspect ratio is not kept; right for the digit and
            clothing models, whose users send the object alone), ``"center-crop"`` scales the
            shorter side to the input size and keeps the centre (a photo keeps its proportions).
    """

    color_mode: Literal["L", "RGB"] = "L"
    resize: bool = True
    resize_mode: Literal["stretch", "center-crop"] = "stretch"


@dataclass
class ModelCard:
    """Metadata of one model folder. Field order is the JSON order."""

    name: str
    version: str
    architecture: str
    config: dict[str, Any]
    input_shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    dataset: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # The engine's settings chosen for this model before any fit, e.g. the classes read
    # (``{"top_n": 12, ...}``, measured at ``gga import``: detectors/row_cost.py). A fitted
    # detector.json's own engine options take precedence.
    engine: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    weights_sha256: str = ""
    onnx_sha256: str | None = None
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def top_n(self) -> int | None:
        """The classes an unfitted model's engine reads (``None``: all)."""
        value = self.engine.get("top_n")
        return None if value is None else int(value)

    @property
    def saliency_layer(self) -> int | None:
        """The block an unfitted model's engine takes gradients at (``None``: the input)."""
        value = self.engine.get("saliency_layer")
        return None if value is None else int(value)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "card") -> "ModelCard":
        """Build a card from parsed JSON, naming ``source`` in any error."""
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in data
        ]
        if missing:
            raise ModelLoadError(f"{source}: missing field(s) {missing}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelLoadError(f"{source}: unknown field(s) {unknown}")
        values = dict(data)
        try:
            values["input_shape"] = tuple(int(v) for v in data["input_shape"])
            values["class_names"] = tuple(str(v) for v in data["class_names"])
            values["preprocessing"] = Preprocessing(**data.get("preprocessing", {}))
        except (TypeError, ValueError) as err:
            raise ModelLoadError(f"{source}: malformed field: {err}") from err
        if len(values["input_shape"]) != 3:
            raise ModelLoadError(
                f"{source}: input_shape must be [C, H, W], got {data['input_shape']}"
            )
        return cls(**values)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> "ModelCard":
        path = Path(folder) / CARD_FILE
        if not path.is_file():
            raise ModelLoadError(f"{path}: no model card; a model folder needs {CARD_FILE}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ModelLoadError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
