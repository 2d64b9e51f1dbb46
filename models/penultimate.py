"""Which classifiers expose penultimate features, the input of the feature-based trust views.

A classifier qualifies when it has ``embed(x) -> (B, F)`` and a ``head`` that is an
``nn.Linear``, with ``model(x) == model.head(model.embed(x))`` in eval mode. Every zoo
architecture declares both; an imported model gets them from a wrapper that cuts its graph at a
named node. A model that lacks them is still served, without the views that need features
(Mahalanobis, k-NN, GradNorm).
"""

from torch import Tensor, nn


def has_penultimate(model: nn.Module) -> bool:
    """Whether ``model`` exposes ``embed(x)`` and a linear ``head`` (see the module docstring)."""
    return callable(getattr(model, "embed", None)) and isinstance(
        getattr(model, "head", None), nn.Linear
    )


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """One forward pass giving the logits and, where the model exposes them, its features.

    Args:
        model: a classifier in eval mode.
        x: its input batch.

    Returns:
        ``(logits (B, C), features (B, F))``, or ``(logits, None)`` for a model without
        penultimate features.
    """
    if not has_penultimate(model):
        return model(x), None
    features = model.embed(x)
    return model.head(features), features
