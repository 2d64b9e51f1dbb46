"""A prediction's pictures as PNG base64: the model's input and the classes' sign maps.

The web console shows what the model saw and where the classes' gradients agree or disagree;
any client gets the same pictures with ``saliency=true``. Pure functions of one pipeline row.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detectors.pipeline import PipelineOutput
from models.imaging import encode_png

# Other classes' maps returned by default besides the predicted class's: the runner-up and the
# next two, the ones whose disagreement with the prediction GGA measures most.
DEFAULT_OTHERS = 3


def png_base64(image: Tensor) -> str:
    """A (C, H, W) image with pixels in [0, 1] as base64 PNG text."""
    return base64.b64encode(encode_png(image.clamp(0, 1))).decode()


def sign_map_png(flat: np.ndarray, input_shape: Sequence[int]) -> str:
    """A flattened sign map as base64 PNG: -1 black, 0 mid grey, +1 white.

    Args:
        flat: The map, (C * H * W,) or (H * W,) when the engine reduced channels.
        input_shape: The model's (C, H, W).

    Returns:
        The PNG, base64.
    """
    c, h, w = input_shape
    image = torch.from_numpy(np.asarray(flat, dtype=np.float32))
    image = image.reshape(1, h, w) if image.numel() == h * w else image.reshape(c, h, w)
    return png_base64((image.clamp(-1, 1) + 1) / 2)


def saliency_maps(
    out: PipelineOutput,
    i: int,
    image: Tensor,
    *,
    input_shape: Sequence[int],
    class_names: Sequence[str],
    others: int = DEFAULT_OTHERS,
) -> dict[str, Any]:
    """The ``saliency`` object of row ``i``: input, predicted map and the top other classes.

    Args:
        out: The batch's pipeline output, computed with ``saliency=True``.
        i: Row in the batch.
        image: Row ``i``'s model input, (C, H, W) in [0, 1].
        input_shape: The model's (C, H, W).
        class_names: Names of the model's classes.
        others: How many of the most probable other classes get a map (when the engine
            computed one for them: with ``top_n`` only the top classes have a row).

    Returns:
        ``predicted``, ``runner_up`` and ``runner_up_label`` (as before), plus ``input``,
        ``predicted_label`` and ``others``: a list of ``{label, class_name, probability, map}``
        in decreasing probability.
    """
    assert out.saliency is not None
    order = [int(c) for c in np.argsort(-out.probabilities[i], kind="stable")]
    rows = {int(c): r for r, c in enumerate(out.classes[i])}
    predicted = order[0]
    maps: dict[str, Any] = {
        "input": png_base64(image),
        "predicted": sign_map_png(out.saliency[i, rows[predicted]], input_shape),
        "predicted_label": predicted,
        "others": [],
    }
    for label in (c for c in order[1:] if c in rows):
        if len(maps["others"]) >= others:
            break
        maps["others"].append(
            {
                "label": label,
                "class_name": class_names[label],
                "probability": float(out.probabilities[i, label]),
                "map": sign_map_png(out.saliency[i, rows[label]], input_shape),
            }
        )
    runner_up = order[1] if len(order) > 1 else None
    if runner_up is not None and runner_up in rows:
        first = maps["others"][0] if maps["others"] else None
        maps["runner_up"] = (
            first["map"]
            if first and first["label"] == runner_up
            else sign_map_png(out.saliency[i, rows[runner_up]], input_shape)
        )
        maps["runner_up_label"] = runner_up
    return maps
