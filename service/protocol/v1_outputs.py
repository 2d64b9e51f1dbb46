"""The v1 predict response: stored predictions as JSON, with the explanations and PNGs asked for.

Explanations and PNGs are rendered here, on the decode pool once the predictions are stored,
never on the batcher's persist thread, where they would hold up the next batch's commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detectors.features import FEATURE_NAMES
from service.model import ServedModel
from service.predictions import Predictions
from service.protocol.schemas import PredictResponse
from service.saliency import DEFAULT_OTHERS, saliency_maps


@dataclass(frozen=True)
class Extras:
    """What a v1 request adds to each prediction.

    Attributes:
        explain: The ten features, the CSM and each trust view's p-value.
        saliency: The model's input and sign maps as PNG base64.
        saliency_others: How many other classes' sign maps ``saliency`` adds.
    """

    explain: bool = False
    saliency: bool = False
    saliency_others: int = DEFAULT_OTHERS

    @property
    def wanted(self) -> bool:
        """Whether anything is to be rendered."""
        return self.explain or self.saliency


def render_extras(
    model: ServedModel, predictions: Predictions, extras: Extras
) -> list[dict[str, Any]]:
    """Each prediction's ``explanation`` and ``saliency`` (CPU work: runs on the decode pool).

    Args:
        model: The model that computed them (the request's resolved model).
        predictions: The request's stored predictions; computed with saliency maps when
            ``extras.saliency``.
        extras: What was asked for.

    Returns:
        One dict per prediction, in order, holding the keys asked for.
    """
    out = predictions.out
    added: list[dict[str, Any]] = [{} for _ in range(len(predictions))]
    for i, fields in enumerate(added):
        if extras.explain:
            fields["explanation"] = _explanation(model, predictions, i)
        if extras.saliency and out.saliency is not None:
            fields["saliency"] = saliency_maps(
                out,
                i,
                predictions.inputs[i],
                input_shape=model.card.input_shape,
                class_names=predictions.class_names,
                others=extras.saliency_others,
            )
    return added


def _explanation(model: ServedModel, predictions: Predictions, i: int) -> dict[str, Any]:
    out = predictions.out
    scorer = model.pipeline.scorer if model.pipeline is not None else None
    views = (
        {
            view: {"p_value": float(p[i]), "title": scorer.views[view].title}
            for view, p in out.views.items()
        }
        if scorer is not None
        else {}
    )
    return {
        "features": dict(zip(FEATURE_NAMES, out.features[i].tolist(), strict=True)),
        "classes": out.classes[i].tolist(),
        "csm": out.csm[i].astype(float).round(6).tolist(),
        "views": views,
        "fusion": scorer.fusion.kind if scorer is not None else None,
    }


def predict_response(predictions: Predictions, added: list[dict[str, Any]] | None) -> str:
    """The JSON body of a v1 predict response.

    Args:
        predictions: The request's stored predictions.
        added: :func:`render_extras`'s output, or None when nothing was asked for.
    """
    out = predictions.out
    rows = []
    for i, prediction_id in enumerate(predictions.ids):
        label = int(out.labels[i])
        rows.append(
            {
                "id": prediction_id,
                "model": predictions.model,
                "model_version": predictions.model_version,
                "label": label,
                "class_name": predictions.class_names[label],
                "probabilities": out.probabilities[i].tolist(),
                "trust_score": predictions.trust_score(i),
                "flagged": bool(out.flagged[i]),
                "created_at": predictions.created_at,
                **(added[i] if added else {}),
            }
        )
    # Serialised here once; returning the model would make FastAPI validate it a second time.
    return PredictResponse.model_validate({"predictions": rows}).model_dump_json()
