"""``detector.json``: the fitted trust scorer of one model folder, as plain JSON (no pickle).

Format 2 holds each view's parameters and calibration, the fusion, the final calibration and
alpha, the engine options the views' inputs were computed with, the data, splits, seeds and
choices made, and the sha256 of the model weights it was fitted for. Format 1 (one LODA or
logistic detector on the ten GGA features) still loads. Loading refuses a file fitted for other
weights: its scores would be meaningless. ``detectors.trust.TrustScorer`` reads and writes the
content; this module owns the file.
"""

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from models.errors import GGAUserError

logger = logging.getLogger(__name__)

DETECTOR_FILE = "detector.json"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class DetectorNotFoundError(GGAUserError, LookupError):
    """A model folder has no ``detector.json``."""


class DetectorFileError(GGAUserError, ValueError):
    """A ``detector.json`` is unreadable, malformed, or was fitted for other weights."""


def fit_hint(model_name: str) -> str:
    return f"run `gga fit {model_name}`"


def write_detector_file(folder: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as ``folder/detector.json`` atomically (temp file, then rename).

    A server reading the folder while ``gga fit`` runs sees the old file or the new one, never
    half of one.
    """
    folder = Path(folder)
    path = folder / DETECTOR_FILE
    payload = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".detector.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s", path)
    return path


def read_detector_file(
    folder: Path, weights_sha256: str | None, model_name: str | None = None
) -> dict[str, Any]:
    """Read ``folder/detector.json`` and check it belongs to the weights ``weights_sha256``.

    Args:
        folder: the model folder.
        weights_sha256: hash of the weights being served; ``None`` skips the check (tools that
            only inspect the file).
        model_name: name used in the remedy; defaults to the folder name.

    Returns:
        The parsed payload.

    Raises:
        DetectorNotFoundError: no ``detector.json`` in the folder.
        DetectorFileError: unreadable JSON, an unknown format version, or a weights mismatch.
    """
    folder = Path(folder)
    name = model_name or folder.name
    path = folder / DETECTOR_FILE
    if not path.is_file():
        raise DetectorNotFoundError(
            f"model {name!r} has no trust detector ({path} is missing); {fit_hint(name)}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DetectorFileError(f"{path}: not readable JSON ({err}); {fit_hint(name)}") from err
    if not isinstance(data, dict) or data.get("format_version") not in READABLE_VERSIONS:
        raise DetectorFileError(
            f"{path}: not a detector.json of format version "
            f"{' or '.join(map(str, READABLE_VERSIONS))}; {fit_hint(name)}"
        )
    fitted_for = data.get("model", {}).get("weights_sha256")
    if weights_sha256 is not None and fitted_for != weights_sha256:
        other = data.get("model", {}).get("name", "?")
        raise DetectorFileError(
            f"{path} was fitted for model {other!r} with weights sha256 "
            f"{str(fitted_for)[:12]}…, but the weights are {weights_sha256[:12]}…; "
            f"the detector must be re-fitted for these weights: {fit_hint(name)}"
        )
    return data
