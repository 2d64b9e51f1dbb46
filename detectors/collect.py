"""What the trust views read from one engine call."""

import numpy as np
from torch import Tensor

from detectors.engine import EngineOutput
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
        squeezed=None if out.squeezed is None else np_(out.squeezed).astype(np.float64),
        blocks=None if out.blocks is None else tuple(np_(b).astype(np.float32) for b in out.blocks),
    )
