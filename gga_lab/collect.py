"""Run the gradient engine over many inputs and keep what the trust views read."""

from torch import Tensor
from tqdm import tqdm

from detectors.collect import view_inputs
from detectors.engine import GradientEngine
from detectors.views.base import ViewInputs


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
