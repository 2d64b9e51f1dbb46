"""Run the gradient engine over many inputs and keep what the trust views read."""

import numpy as np
from torch import Tensor
from tqdm import tqdm

from detectors.engine import EngineOutput, GradientEngine
from detectors.views.base import ViewInputs


def view_inputs(out: EngineOutput) -> ViewInputs:
    """The ``ViewInputs`` of one engine call (numpy, on the CPU)."""

    def np_(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return ViewInputs(
        logits=np_(out.logits).astype(np.float64),
        predicted=np_(out.predicted).astype(np.int64),
        gga=np_(out.features).astype(np.float64),
        csm=np_(out.csm).astype(np.float32),
        classes=np_(out.classes).astype(np.int64),
        penultimate=None if out.penultimate is None else np_(out.penultimate).astype(np.float32),
    )


def collect_view_inputs(
    engine: GradientEngine,
    x: Tensor,
    batch_size: int = 128,
    desc: str | None = None,
    progress: bool = True,
) -> ViewInputs:
    """``ViewInputs`` of ``x``, batch by batch through the engine, with a progress bar.

    Args:
        engine: the gradient engine.
        x: float pixels (N, C, H, W) in [0, 1]; N may be 0.
        batch_size: inputs per engine call.
        desc: progress bar label.
        progress: show the bar.

    Returns:
        The inputs' ``ViewInputs`` (N rows).
    """
    parts = []
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        parts.append(view_inputs(engine(x[i : i + batch_size])))
    if not parts:
        probe = view_inputs(engine(x.new_zeros(1, *x.shape[1:])))
        return probe.take(slice(0, 0))
    return ViewInputs.concat(parts)
