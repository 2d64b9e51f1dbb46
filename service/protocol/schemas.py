"""Every pydantic model on the wire, v1 (native) and v2 (Open Inference Protocol), in one module.

Request models here describe what a client may send (they feed ``/openapi.json``); the data plane
works on internal objects, not on these.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

# -- errors ---------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'invalid_image'.")
    message: str = Field(description="What is wrong and how to fix it.")


class ErrorV1(BaseModel):
    error: ErrorDetail


class ErrorV2(BaseModel):
    error: str


# -- v1: predict ------------------------------------------------------------------------------


class PredictJSON(BaseModel):
    """JSON body of ``POST /v1/models/{name}/predict``: exactly one of ``images`` or ``tensor``."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] | None = Field(
        None, description="Base64-encoded PNG or JPEG files, one per image."
    )
    tensor: list[Any] | None = Field(
        None,
        description="Pixels in [0, 1], nested lists of shape (N, C, H, W), (C, H, W) or (H, W).",
    )


class ViewExplanation(BaseModel):
    p_value: float = Field(
        description="This view's own conformal p-value: low means this view finds the input "
        "unusual (the view that raised a flag has the lowest)."
    )
    title: str = Field(description="What the view looks at, e.g. 'gradient geometry'.")


class Explanation(BaseModel):
    features: dict[str, float] = Field(description="The ten GGA features by name.")
    classes: list[int] = Field(description="Class index of each CSM row.")
    csm: list[list[float]] = Field(description="Cosine similarity matrix of the saliency maps.")
    views: dict[str, ViewExplanation] = Field(
        default_factory=dict,
        description="Each trust view's p-value by view name (gga-csm, knn, energy, ...).",
    )
    fusion: str | None = Field(None, description="How the views' p-values were fused.")


class SaliencyMap(BaseModel):
    label: int
    class_name: str
    probability: float
    map: str = Field(description="Sign map of this class, PNG base64 (black -1, grey 0, white +1).")


class Saliency(BaseModel):
    predicted: str = Field(description="Sign map of the predicted class, PNG base64 (grey 0.5=0).")
    runner_up: str | None = Field(None, description="Sign map of the second most probable class.")
    runner_up_label: int | None = None
    input: str | None = Field(
        None, description="The image as the model saw it (after resizing and colour), PNG base64."
    )
    predicted_label: int | None = None
    others: list[SaliencyMap] = Field(
        default_factory=list,
        description="Sign maps of the most probable other classes, most probable first "
        "(as many as saliency_others asks).",
    )


class PredictionOut(BaseModel):
    id: str = Field(description="Id to query later with GET /v1/predictions/{id}.")
    model: str
    model_version: str
    label: int
    class_name: str
    probabilities: list[float]
    trust_score: float | None = Field(
        description="Calibrated trust in (0, 1]; low means untrusted. Null for a model served "
        "without a fitted detector (see the model's warnings)."
    )
    flagged: bool = Field(description="True when trust_score is below the model's alpha.")
    created_at: dt.datetime
    explanation: Explanation | None = None
    saliency: Saliency | None = None


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]


class StoredFeedback(BaseModel):
    correct: bool = Field(description="Whether the predicted class was right.")
    label: int | None = Field(description="The true class; null when only 'wrong' was said.")
    at: dt.datetime = Field(description="When this feedback was posted.")


class Scores(BaseModel):
    fused: float = Field(description="The fused outlier statistic before the final calibration.")
    views: dict[str, float | None] = Field(
        default_factory=dict, description="Each fused view's raw outlier score, by view name."
    )
    statistic: str | None = Field(
        None,
        description="Which fused statistic this is (a hash of the fused views, their "
        "calibrations and the fusion): a recalibration uses only scores of the served one.",
    )


class StoredPrediction(BaseModel):
    id: str
    model: str
    model_version: str
    label: int
    class_name: str
    probabilities: list[float]
    trust_score: float | None
    flagged: bool
    created_at: dt.datetime
    features: dict[str, float] | None = None
    request_id: str
    scores: Scores | None = Field(
        None, description="What recalibration needs; null without a detector (or before 0004)."
    )
    feedback: StoredFeedback | None = Field(None, description="The latest feedback, if any.")


# -- v1: feedback -------------------------------------------------------------------------------

ClassName = Annotated[str, Field(min_length=1, max_length=128)]


class FeedbackIn(BaseModel):
    """Body of ``POST /v1/predictions/{id}/feedback``: exactly one of ``label`` and ``correct``."""

    model_config = ConfigDict(extra="forbid")

    label: StrictInt | ClassName | None = Field(
        None, description="The true class: its index, or its name in the model's card."
    )
    correct: StrictBool | None = Field(
        None, description="Whether the predicted class was right (when the true one is unknown)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.label is None) == (self.correct is None):
            raise ValueError("send exactly one of 'label' (the true class) and 'correct'")
        return self


class FeedbackItem(FeedbackIn):
    id: str = Field(min_length=1, max_length=64, description="The prediction's id.")


class FeedbackBatchIn(BaseModel):
    """Body of ``POST /v1/predictions/feedback``: stored all together, or not at all."""

    model_config = ConfigDict(extra="forbid")

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=500)


class FeedbackOut(BaseModel):
    prediction_id: str
    correct: bool
    label: int | None = Field(description="The true class; null when only 'wrong' was said.")
    class_name: str | None = Field(None, description="Its name (null when unknown).")
    revision: int = Field(
        description="This post's place in the store's feedback history: a higher revision "
        "replaced a lower one."
    )
    created_at: dt.datetime


class FeedbackList(BaseModel):
    feedback: list[FeedbackOut]


class PredictionPage(BaseModel):
    predictions: list[StoredPrediction]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


class CalibrationInfo(BaseModel):
    source: str = Field(description="Where the calibration images came from.")
    n: int = Field(description="Clean, correctly classified calibration images.")


class DetectorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="'multi-view', or the single view of an older detector.")
    alpha: float
    n_calibration: int
    views: list[str] = Field(default_factory=list, description="The fused trust views.")
    view_titles: dict[str, str] = Field(default_factory=dict)
    fusion: str | None = Field(None, description="How the views' p-values are fused.")
    calibration: CalibrationInfo | None = None


class ModelOut(BaseModel):
    name: str
    version: str
    ready: bool
    architecture: str
    dataset: str
    input_shape: list[int]
    class_names: list[str]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    detector: DetectorInfo | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="What a client should know, e.g. that the model has no trust detector.",
    )


class ModelList(BaseModel):
    models: list[ModelOut]
    default_model: str


class FlagQualityOut(BaseModel):
    labelled: int = Field(description="Predictions with feedback.")
    correct: int
    wrong: int
    flagged: int
    flagged_wrong: int
    false_alarms: int = Field(description="Flagged although correct.")
    precision: float | None = Field(description="flagged_wrong / flagged.")
    recall: float | None = Field(description="flagged_wrong / wrong.")
    false_alarm_rate: float | None = Field(description="false_alarms / correct.")
    false_alarm_interval: list[float] = Field(
        description="Wilson interval [low, high] of the false-alarm rate."
    )
    confidence: float = Field(description="The interval's confidence level.")
    alpha: float | None = Field(description="The model's calibrated false-alarm rate.")
    false_alarms_above_alpha: bool | None = Field(
        description="True when the interval's low end is above alpha."
    )


class Stats(BaseModel):
    model: str | None
    window: str | None
    count: int
    flagged: int
    flag_rate: float | None
    trust_quantiles: dict[str, float] | None
    flag_quality: dict[str, FlagQualityOut] = Field(
        default_factory=dict,
        description="Per model, the flag's quality on the predictions with feedback in the "
        "window (models without any are left out).",
    )
    latency_quantiles: dict[str, float] | None = Field(
        None,
        description="Predict request latency in seconds (p50, p90, p99) since this server "
        "process started, whatever the window; estimated within Prometheus histogram buckets.",
    )


# -- v2: Open Inference Protocol --------------------------------------------------------------

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = Field(
        None, description="``warnings``: e.g. that the model has no trust detector."
    )


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class ReadyResponse(BaseModel):
    ready: bool
