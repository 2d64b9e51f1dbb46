"""Which format a model file is in, told from its bytes, and reading it into a module.

Nothing here unpickles arbitrary Python. A ``torch.save`` file (a zip holding ``data.pkl`` and
no TorchScript code, or a bare pickle stream) is refused before anything is loaded; its
contents are only ever inspected with ``torch.load(weights_only=True)``, which rebuilds tensors
and plain containers and refuses every other object. TorchScript is read by ``torch.jit.load``
(its own restricted unpickler, no Python classes), torch.export by ``torch.export.load``.
"""

import zipfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from models.imported.errors import ModelImportError

Format = Literal["onnx", "torch-export", "torchscript"]
FORMATS: dict[str, str] = {
    "onnx": "model.onnx",
    "torch-export": "model.pt2",
    "torchscript": "model.pt",
}
# Pickle streams start with PROTO (0x80) and the protocol number (2 to 5).
_PICKLE_MAGIC = tuple(bytes([0x80, p]) for p in range(2, 6))
HOW_TO_EXPORT = (
    "export it instead: torch.export.save(torch.export.export(model.eval(), (example,)), "
    "'model.pt2'), or torch.jit.save(torch.jit.script(model.eval()), 'model.pt'), or "
    "torch.onnx.export(model.eval(), (example,), 'model.onnx', dynamic_axes={...: {0: 'batch'}})"
)


def detect_format(path: Path) -> Format:
    """The format of the model file at ``path``, from its contents (never by unpickling).

    Raises:
        ModelImportError: the file is missing, empty, truncated, a pickle or ``torch.save``
            checkpoint, or not a model file at all.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ModelImportError(f"{path}: the file is empty")
    if head.startswith(_PICKLE_MAGIC):
        raise ModelImportError(
            f"{path}: a Python pickle (torch.save of a model or checkpoint, legacy format); "
            f"loading it would run arbitrary code, so it is refused: {HOW_TO_EXPORT}"
        )
    if head.startswith(b"PK"):
        return _zip_format(path)
    if _looks_like_onnx(path):
        return "onnx"
    raise ModelImportError(
        f"{path}: not an ONNX, torch.export (.pt2) or TorchScript (.pt) file; {HOW_TO_EXPORT}"
    )


def _zip_format(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelImportError(f"{path}: a truncated or corrupt zip archive ({err})") from err
    if broken is not None:
        raise ModelImportError(f"{path}: truncated or corrupt (member {broken} fails its CRC)")
    tails = {n.split("/", 1)[-1] for n in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "torch-export"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "data.pkl" in tails:
        raise ModelImportError(f"{path}: {_describe_checkpoint(path)}; {HOW_TO_EXPORT}")
    raise ModelImportError(
        f"{path}: a zip archive, but neither torch.export nor TorchScript; {HOW_TO_EXPORT}"
    )


def _describe_checkpoint(path: Path) -> str:
    """What a ``torch.save`` zip holds, found with the safe loader only."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # weights_only refuses any object that is not tensors and containers
        return (
            "a torch.save pickle of Python objects (a whole nn.Module?); unpickling it would run "
            "arbitrary code, so it is refused"
        )
    return (
        "a torch.save checkpoint of weights only (a state_dict): it holds no graph, so the "
        "network cannot be rebuilt from it"
    )


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx
    except ImportError as err:
        raise ModelImportError(
            f"{path}: not a torch.export, TorchScript or pickle file; telling whether it is ONNX "
            "needs the [import] extra: pip install -c constraints.txt 'gga-serve[import]' && "
            "pip install --no-deps -c constraints.txt onnx2torch"
        ) from err

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # any decode failure: not a protobuf ModelProto
        return False
    return len(model.graph.node) > 0 and len(model.graph.output) > 0


def read_module(path: Path, fmt: Format) -> nn.Module:
    """The graph in ``path`` as a module (ONNX is converted, see ``models.imported.onnx_graph``).

    Raises:
        ModelImportError: the file cannot be read in that format.
    """
    path = Path(path)
    if fmt == "onnx":
        from models.imported.onnx_graph import convert_onnx

        return convert_onnx(path)
    try:
        if fmt == "torch-export":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # each loader raises its own types for a damaged file
        raise ModelImportError(
            f"{path}: not a readable {fmt} file ({type(err).__name__}: {str(err)[:300]})"
        ) from err
