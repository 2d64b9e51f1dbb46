"""The views of a prediction that the trust score fuses (see ``detectors.views.base``).

``VIEWS`` maps each name (as in ``detector.json``, ``gga fit --views`` and the API's
``explanation.views``) to its class, in the order they are listed everywhere.
"""

from detectors.views.base import View, ViewInputs, ViewUnavailableError
from detectors.views.blocks import BlocksView
from detectors.views.gga import GGACSMView, GGAPaperView
from detectors.views.logits import EnergyView, MSPView
from detectors.views.penultimate import GradNormView, KNNView, MahalanobisView
from detectors.views.squeeze import SqueezeView

VIEWS: dict[str, type[View]] = {
    cls.name: cls
    for cls in (
        GGAPaperView,
        GGACSMView,
        EnergyView,
        MSPView,
        MahalanobisView,
        KNNView,
        GradNormView,
        SqueezeView,
        BlocksView,
    )
}


def available_views(has_penultimate: bool, has_blocks: bool = True) -> tuple[str, ...]:
    """The names of the views a model can serve: all, or those that need nothing it lacks.

    Args:
        has_penultimate: whether the model exposes penultimate features.
        has_blocks: whether the model has blocks (``models.blocks.has_blocks``).
    """
    return tuple(
        n
        for n, cls in VIEWS.items()
        if (has_penultimate or not cls.needs_penultimate) and (has_blocks or not cls.needs_blocks)
    )


__all__ = ["VIEWS", "View", "ViewInputs", "ViewUnavailableError", "available_views"]
