"""What the served pipeline flags on labelled inputs: the check behind the trust score's promise."""

import numpy as np
from torch import Tensor
from tqdm import tqdm

from detectors.pipeline import GGAPipeline


def flagged_and_correct(
    pipeline: GGAPipeline, x: Tensor, y: Tensor, batch_size: int = 256, desc: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the labelled inputs ``x`` the served pipeline flags, and which it classifies right.

    The check behind the trust score's promise: among correctly classified clean inputs the
    flagged fraction should be about ``pipeline.alpha``.

    Args:
        pipeline: the served pipeline.
        x: float pixels (N, C, H, W) in [0, 1].
        y: true labels (N,).
        batch_size: inputs per pipeline call.
        desc: progress bar label; ``None`` shows no bar.

    Returns:
        ``(flagged, correct)``, boolean arrays (N,).
    """
    starts = range(0, len(x), batch_size)
    flagged, correct = [], []
    for i in tqdm(starts, desc=desc, unit="batch", disable=desc is None, leave=False):
        out = pipeline(x[i : i + batch_size])
        flagged.append(out.flagged)
        correct.append(out.labels == np.asarray(y[i : i + batch_size]))
    return np.concatenate(flagged), np.concatenate(correct)
