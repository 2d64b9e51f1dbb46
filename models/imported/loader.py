"""Reading an imported model folder back: hash first, then the graph, then its cut."""

from pathlib import Path

from models.card import ModelCard, sha256_file
from models.errors import ModelLoadError
from models.imported.errors import ModelImportError
from models.imported.features import find_features
from models.imported.formats import FORMATS, detect_format, read_module
from models.imported.module import ImportedClassifier


def load_imported(folder: Path, card: ModelCard) -> ImportedClassifier:
    """The ``ImportedClassifier`` of an imported model folder.

    Raises:
        ModelLoadError: the file is missing, its sha256 differs from the card's, or it no longer
            reads as the card's format.
    """
    config = card.config
    fmt = config.get("format")
    if fmt not in FORMATS:
        raise ModelLoadError(f"{folder}: card names unknown import format {fmt!r}")
    path = Path(folder) / str(config.get("file", FORMATS[fmt]))
    if not path.is_file():
        raise ModelLoadError(f"{folder}: {path.name} is missing")
    actual = sha256_file(path)
    if actual != card.weights_sha256:
        raise ModelLoadError(
            f"{path}: sha256 {actual[:12]}… does not match the card's {card.weights_sha256[:12]}…; "
            "the file was changed or replaced: restore it or import the model again (--force)"
        )
    try:
        if detect_format(path) != fmt:
            raise ModelLoadError(f"{path}: no longer a {fmt} file")
        graph = read_module(path, fmt)
        cut = find_features(graph, config["features"]) if config.get("features") else None
    except ModelImportError as err:
        raise ModelLoadError(str(err)) from err
    return ImportedClassifier(graph, config["mean"], config["std"], cut)
