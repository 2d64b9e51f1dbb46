"""``import_model``: check a user's model file and write it as a model folder of the repository.

The folder holds the file as it came (``model.onnx``, ``model.pt2`` or ``model.pt``; an ONNX file
whose weights sit in external data files is stored as one file with them inside) and a card
naming the format, input shape, colour mode, normalisation, resize, class names, the stored
file's sha256 (the card's ``weights_sha256``: a fitted detector is bound to it) and where it
came from, with what the checks measured. The folder is written beside the repository's others
under a temporary name and renamed into place, so a failed import leaves the repository as it was.
"""

import datetime as dt
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx, nn

from models.card import CARD_FILE, IMPORTED, ModelCard, Preprocessing, sha256_file
from models.imported.checks import check_graph, read_labels
from models.imported.errors import ModelImportError
from models.imported.features import find_features
from models.imported.formats import FORMATS, Format, detect_format, read_module
from models.imported.module import ImportedClassifier

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PARITY_INPUTS = 32


@dataclass(frozen=True)
class ImportOptions:
    """What the user tells ``gga import`` beyond the file.

    Attributes:
        name: the model folder's name.
        labels: a text file of class names, one a line (default: "0", "1", ...).
        input_shape: (C, H, W); required where the file leaves a dimension dynamic.
        features: the graph node whose output are the penultimate features (default: found).
        no_features: serve without feature views even where features are found.
        mean: per-channel mean of the graph's input normalisation (default 0: [0, 1] pixels).
        std: per-channel std (default 1).
        resize: how images of another size are fitted: "stretch", "center-crop" or "none".
        version: the card's version.
        description: the card's description.
        force: replace an existing model of that name.
        choose_engine: called with the checked model, its input shape and its number of classes
            before anything is written; returns the card's ``engine`` settings (the classes
            read, measured by the caller: ``gga import`` passes ``detectors.row_cost``, which
            this package may not import). ``None`` leaves them empty (all classes).
    """

    name: str
    labels: Path | None = None
    input_shape: tuple[int, int, int] | None = None
    features: str | None = None
    no_features: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: str = "stretch"
    version: str = "1"
    description: str = ""
    force: bool = False
    choose_engine: Callable[[nn.Module, tuple[int, int, int], int], dict[str, object]] | None = None


def _declared_shape(path: Path, fmt: Format, graph: nn.Module | None) -> tuple[int | None, ...]:
    if fmt == "onnx":
        from models.imported.onnx_graph import onnx_input_shape

        return onnx_input_shape(path)
    if fmt == "torch-export" and isinstance(graph, fx.GraphModule):
        for node in graph.graph.nodes:
            if node.op == "placeholder" and hasattr(node.meta.get("val"), "shape"):
                dims = tuple(node.meta["val"].shape)
                if len(dims) != 4:
                    raise ModelImportError(
                        f"{path}: the graph's input has shape {dims}; expected (N, C, H, W)"
                    )
                return tuple(d if isinstance(d, int) else None for d in dims[1:])
    return (None, None, None)  # TorchScript records no input shape


def resolve_shape(
    path: Path, declared: tuple[int | None, ...], given: tuple[int, int, int] | None
) -> tuple[int, int, int]:
    """The input shape: the file's, completed or confirmed by ``--input-shape``.

    Raises:
        ModelImportError: a dimension is dynamic and none was given, or the two disagree.
    """
    if given is None:
        if any(d is None for d in declared):
            shown = ",".join("?" if d is None else str(d) for d in declared)
            raise ModelImportError(
                f"{path}: the input shape (C,H,W) is {shown}: dynamic dimensions (or a format "
                "that records none); give it with --input-shape C,H,W"
            )
        return tuple(int(d) for d in declared)  # type: ignore[return-value]
    clash = [(d, g) for d, g in zip(declared, given, strict=True) if d is not None and d != g]
    if clash:
        raise ModelImportError(
            f"{path}: --input-shape {','.join(map(str, given))} contradicts the file's input "
            f"shape {','.join('?' if d is None else str(d) for d in declared)}"
        )
    return given


def _normalisation(options: ImportOptions, channels: int) -> tuple[list[float], list[float]]:
    mean = list(options.mean or (0.0,) * channels)
    std = list(options.std or (1.0,) * channels)
    for what, values in (("--mean", mean), ("--std", std)):
        if len(values) == 1 and channels > 1:
            values *= channels
        if len(values) != channels:
            raise ModelImportError(
                f"{what} has {len(values)} values; the model takes {channels} channels"
            )
    if min(std) <= 0:
        raise ModelImportError(f"--std must be positive, got {std}")
    return mean, std


def check_name(name: str) -> str:
    """``name`` if it is a usable folder name.

    Raises:
        ModelImportError: empty, hidden, or with characters other than letters, digits, ._-.
    """
    if not _NAME.match(name):
        raise ModelImportError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' (not first), at most 100"
        )
    return name


def import_model(path: Path, repository: Path, options: ImportOptions) -> ModelCard:
    """Check ``path`` and write it as ``repository/<options.name>``.

    Args:
        path: the model file (ONNX, torch.export ``.pt2``, TorchScript ``.pt``).
        repository: the model repository folder.
        options: see ``ImportOptions``.

    Returns:
        The card as written.

    Raises:
        ModelImportError: the file is refused or fails a check (nothing is written), or the name
            exists and ``force`` is off.
    """
    path, repository = Path(path), Path(repository)
    name = check_name(options.name)
    target = repository / name
    if target.exists() and not options.force:
        raise ModelImportError(
            f"{target} already exists; choose another --name, or --force to replace it"
        )
    if options.resize not in ("stretch", "center-crop", "none"):
        raise ModelImportError(f"--resize must be stretch, center-crop or none: {options.resize}")
    fmt = detect_format(path)
    with tempfile.TemporaryDirectory(prefix="gga-import-") as scratch:
        stored, external = _file_to_store(path, fmt, Path(scratch))
        card = _checked_card(path, stored, external, fmt, name, options)
        _write_folder(stored, target, card, options.force)
    logger.info("imported %s as %s (%s, input %s)", path, target, fmt, card.input_shape)
    return card


def _file_to_store(path: Path, fmt: Format, scratch: Path) -> tuple[Path, list[str]]:
    """The file the model folder keeps, and the external data files folded into it.

    That is ``path`` itself, except for an ONNX file whose tensors sit in external data files
    (``torch.onnx.export`` writes ``model.onnx.data`` by default): a copy in ``scratch`` holds
    them, so the folder keeps one file and its sha256 covers the weights too.
    """
    if fmt != "onnx":
        return path, []
    from models.imported.onnx_graph import external_data_files, write_self_contained

    external = external_data_files(path)
    if not external:
        return path, []
    stored = scratch / FORMATS[fmt]
    write_self_contained(path, stored)
    return stored, external


def _checked_card(
    path: Path, stored: Path, external: list[str], fmt: Format, name: str, options: ImportOptions
) -> ModelCard:
    """Read and check the model; its card, naming ``path`` as the source and ``stored``'s hash.

    Raises:
        ModelImportError: a check fails.
    """
    graph = read_module(path, fmt)
    shape = resolve_shape(path, _declared_shape(path, fmt, graph), options.input_shape)
    channels = shape[0]
    if channels not in (1, 3):
        raise ModelImportError(
            f"input shape {shape}: gga-serve decodes images to 1 (grey) or 3 (RGB) channels"
        )
    mean, std = _normalisation(options, channels)
    cut = None if options.no_features else find_features(graph, options.features)
    model = ImportedClassifier(graph, mean, std, cut)
    checks = check_graph(model, shape)
    if cut is not None:
        # The cut graph must give the graph's own logits: the head is the same layer.
        x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            diff = float((model(x) - graph(model.normalize(x))).abs().max())
        if diff > 1e-4 * max(1.0, float(model(x).abs().max())):
            raise ModelImportError(f"cutting the graph at {cut.node!r} changes its logits: {diff}")
    names = (
        read_labels(options.labels, checks.num_classes)
        if options.labels is not None
        else tuple(str(i) for i in range(checks.num_classes))
    )
    config: dict[str, object] = {
        "format": fmt,
        "file": FORMATS[fmt],
        "source": str(path.resolve()),
        "source_name": path.name,
        "mean": mean,
        "std": std,
        "features": cut.node if cut is not None else None,
        "features_how": _features_how(cut, options, fmt),
        "checks": checks.to_dict(),
    }
    if fmt == "onnx":
        config["onnx"] = _onnx_report(path, model, shape)
        if external:
            config["onnx"]["external_data"] = {
                "files": external,
                "stored": f"inside {FORMATS[fmt]}, which weights_sha256 covers",
            }
    return ModelCard(
        name=name,
        version=options.version,
        architecture=IMPORTED,
        config=config,
        input_shape=shape,
        class_names=names,
        dataset="user",
        preprocessing=Preprocessing(
            color_mode="L" if channels == 1 else "RGB",
            resize=options.resize != "none",
            resize_mode="center-crop" if options.resize == "center-crop" else "stretch",
        ),
        engine=(options.choose_engine(model, shape, len(names)) if options.choose_engine else {}),
        metrics={},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        weights_sha256=sha256_file(stored),
        description=options.description or f"imported from {path.name} ({fmt})",
    )


def _features_how(cut, options: ImportOptions, fmt: str) -> str:
    if options.no_features:
        return "none: --no-features"
    if cut is not None:
        return "named by --features" if options.features else "found: the final linear's input"
    if fmt == "torchscript":
        return "none: a TorchScript graph is not cut (the feature views are left out)"
    return "none: the graph does not end in a linear layer (the feature views are left out)"


def _onnx_report(path: Path, model: ImportedClassifier, shape: Sequence[int]) -> dict[str, object]:
    from models.imported.onnx_graph import NORMALISATION_KEY
    from models.imported.onnx_parity import check_onnx_parity, where_to_predict

    generator = torch.Generator().manual_seed(2)
    x = model.normalize(torch.rand(PARITY_INPUTS, *shape, generator=generator))
    parity = check_onnx_parity(path, model.graph, x)
    if not parity.ok:
        raise ModelImportError(
            f"{path}: the converted graph disagrees with onnxruntime (max |logit diff| "
            f"{parity.max_abs_diff:.3g}, same class on {parity.same_argmax:.0%} of "
            f"{parity.n} random inputs); the conversion is not faithful for this graph"
        )
    return {
        "converter": "onnx2torch",
        "normalisation": model.graph.meta.get(NORMALISATION_KEY),
        "parity": {
            "inputs": parity.n,
            "max_abs_diff": parity.max_abs_diff,
            "same_argmax": parity.same_argmax,
        },
        "compute": where_to_predict(path, model.graph, x[:8]),
    }


def _write_folder(source: Path, target: Path, card: ModelCard, force: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".import-{card.name}-", dir=target.parent))
    try:
        shutil.copyfile(source, staging / str(card.config["file"]))
        if sha256_file(staging / str(card.config["file"])) != card.weights_sha256:
            raise ModelImportError(f"{source} changed while it was being imported; try again")
        card.save(staging)
        if target.exists():
            if not force:
                raise ModelImportError(f"{target} appeared during the import; use --force")
            retired = Path(tempfile.mkdtemp(prefix=f".replaced-{card.name}-", dir=target.parent))
            target.rename(retired / "old")
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    assert (target / CARD_FILE).is_file()
