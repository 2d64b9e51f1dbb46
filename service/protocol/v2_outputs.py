"""The v2 protocol's tensor names: the one input and the outputs a served model gives."""

from service.model import ServedModel

INPUT_NAME = "image"
OUTPUTS: dict[str, str] = {
    "probabilities": "FP32",
    "label": "INT64",
    "trust_score": "FP32",
    "flagged": "BOOL",
    "prediction_id": "BYTES",
}
TRUST_OUTPUTS = ("trust_score", "flagged")


def served_outputs(model: ServedModel) -> dict[str, str]:
    """The outputs ``model`` gives: no trust score or flag without a fitted detector."""
    if model.pipeline is not None and not model.has_detector:
        return {n: t for n, t in OUTPUTS.items() if n not in TRUST_OUTPUTS}
    return OUTPUTS
