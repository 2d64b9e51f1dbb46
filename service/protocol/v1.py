"""The native v1 API: predict with trust scores, stored predictions, models, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from service.dataplane import DataPlane, parse_window
from service.feedback import FeedbackRequest, FeedbackService
from service.flag_quality import flag_quality, served_alphas
from service.latency import predict_latency_quantiles
from service.model import RequestContext
from service.protocol.decode import ACCEPTED, check_request_id, off_loop, read_predict_body
from service.protocol.deps import CallerDep, DataPlaneDep, IdentityDep, MetricsDep, ReaderDep
from service.protocol.openapi import body_ref
from service.protocol.schemas import (
    ErrorV1,
    FeedbackBatchIn,
    FeedbackIn,
    FeedbackList,
    FeedbackOut,
    ModelList,
    ModelOut,
    PredictionPage,
    PredictJSON,
    PredictResponse,
    Stats,
    StoredPrediction,
)
from service.protocol.v1_outputs import Extras, predict_response, render_extras
from service.saliency import DEFAULT_OTHERS

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorV1} for code in (401, 403, 404, 413, 415, 422, 429, 503)
}

# The body is read by the handler (it must be size-checked and may be multipart or JSON), so its
# schema is declared here for /openapi.json rather than inferred from a parameter.
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": ACCEPTED,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": body_ref(PredictJSON)},
        },
    }
}


async def predict(
    name: str,
    request: Request,
    dataplane: DataPlaneDep,
    caller: CallerDep,
    explain: Annotated[bool, Query(description="add the ten features and the CSM")] = False,
    saliency: Annotated[
        bool, Query(description="add the model's input and sign maps (PNG base64)")
    ] = False,
    saliency_others: Annotated[
        int, Query(ge=0, le=1000, description="other classes' sign maps with saliency")
    ] = DEFAULT_OTHERS,
) -> Response:
    """Classify images; every prediction comes with a calibrated trust score and an id."""
    target = dataplane.resolve(name)
    sent_id = request.headers.get("x-request-id")
    request_id = check_request_id(sent_id, "X-Request-ID header") if sent_id else None
    inputs = await read_predict_body(request, target.spec)
    context = RequestContext(
        request_id=request_id or uuid.uuid4().hex, owner=caller, saliency=saliency
    )
    predictions = await dataplane.predict(target, inputs, context)
    extras = Extras(explain=explain, saliency=saliency, saliency_others=saliency_others)
    added = (
        await off_loop(request, render_extras, target.model, predictions, extras)
        if extras.wanted
        else None
    )
    return Response(predict_response(predictions, added), media_type="application/json")


async def get_prediction(
    prediction_id: str, dataplane: DataPlaneDep, reader: ReaderDep
) -> StoredPrediction:
    """One stored prediction (a predict key's own only; read and admin keys see every key's)."""
    return StoredPrediction.model_validate(await dataplane.get_prediction(prediction_id, reader))


def get_feedback_service(dataplane: DataPlaneDep) -> FeedbackService:
    return FeedbackService(dataplane.db, dataplane.registry)


FeedbackDep = Annotated[FeedbackService, Depends(get_feedback_service)]


async def post_feedback(
    prediction_id: str,
    body: FeedbackIn,
    feedback: FeedbackDep,
    reader: ReaderDep,
    identity: IdentityDep,
) -> FeedbackOut:
    """Say what the true class of a stored prediction was, or only whether it was correct.

    The key that made the prediction may post, and so may read and admin keys; a later post
    replaces the current feedback, and the earlier ones stay in its history.
    """
    request = FeedbackRequest.from_body(prediction_id, body)
    (recorded,) = await feedback.post([request], reader, identity.key_id)
    return FeedbackOut.model_validate(recorded)


async def post_feedback_batch(
    body: FeedbackBatchIn, feedback: FeedbackDep, reader: ReaderDep, identity: IdentityDep
) -> FeedbackList:
    """Feedback on many predictions, stored all together or, on any error, not at all."""
    requests = [FeedbackRequest.from_body(item.id, item) for item in body.feedback]
    recorded = await feedback.post(requests, reader, identity.key_id)
    return FeedbackList.model_validate({"feedback": recorded})


async def get_feedback_history(
    prediction_id: str, feedback: FeedbackDep, reader: ReaderDep
) -> FeedbackList:
    """Every feedback post on a stored prediction, oldest first (the last is current)."""
    history = await feedback.history(prediction_id, reader)
    return FeedbackList.model_validate({"feedback": history})


async def list_predictions(
    dataplane: DataPlaneDep,
    reader: ReaderDep,
    model: str | None = None,
    flagged: bool | None = None,
    feedback: Annotated[
        Literal["correct", "wrong", "labelled", "none"] | None,
        Query(description="only predictions whose feedback says so, with any, or without"),
    ] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PredictionPage:
    """Stored predictions, newest first; follow ``next_cursor`` for older ones."""
    rows, next_cursor = await dataplane.list_predictions(
        reader,
        model=model,
        flagged=flagged,
        feedback=feedback,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return PredictionPage.model_validate({"predictions": rows, "next_cursor": next_cursor})


async def list_models(dataplane: DataPlaneDep, caller: CallerDep) -> ModelList:
    """The served models with their cards and detector summaries."""
    return ModelList.model_validate(
        {"models": dataplane.models_info(), "default_model": dataplane.settings.default_model}
    )


async def get_model(name: str, dataplane: DataPlaneDep, caller: CallerDep) -> ModelOut:
    """One served model: card, detector summary, calibration and alpha."""
    return ModelOut.model_validate(dataplane.model_info(name))


async def get_stats(
    dataplane: DataPlaneDep,
    reader: ReaderDep,
    metrics: MetricsDep,
    model: str | None = None,
    window: Annotated[str | None, Query(description="e.g. 15m, 24h, 7d", max_length=16)] = None,
) -> Stats:
    """Counts, flag rate and trust-score quantiles of the predictions the caller may read (a
    predict key's own; every key's for read and admin keys); predict latency."""
    stats = await dataplane.stats(reader, model, window)
    stats["latency_quantiles"] = predict_latency_quantiles(metrics.registry, model)
    stats["flag_quality"] = await _flag_quality(dataplane, reader, model, window)
    return Stats.model_validate(stats)


async def _flag_quality(
    dataplane: DataPlane, reader: str | None, model: str | None, window: str | None
) -> dict[str, Any]:
    span = parse_window(window)
    since = dt.datetime.now(dt.UTC) - span if span is not None else None
    alphas = served_alphas(dataplane.registry)
    quality = await asyncio.to_thread(
        flag_quality, dataplane.db, reader, alphas, model=model, since=since
    )
    return {name: q.to_dict() for name, q in quality.items()}


def register_v1_endpoints(app: FastAPI) -> None:
    """Add the v1 routes to ``app``: one table, handlers above."""
    router = APIRouter(prefix="/v1", tags=["v1"], responses=ERRORS)
    router.add_api_route(
        "/models/{name}/predict",
        predict,
        methods=["POST"],
        openapi_extra=PREDICT_BODY,
        response_model=PredictResponse,
    )
    router.add_api_route("/predictions/feedback", post_feedback_batch, methods=["POST"])
    router.add_api_route("/predictions/{prediction_id}", get_prediction, methods=["GET"])
    router.add_api_route("/predictions/{prediction_id}/feedback", post_feedback, methods=["POST"])
    router.add_api_route(
        "/predictions/{prediction_id}/feedback", get_feedback_history, methods=["GET"]
    )
    router.add_api_route("/predictions", list_predictions, methods=["GET"])
    router.add_api_route("/models", list_models, methods=["GET"])
    router.add_api_route("/models/{name}", get_model, methods=["GET"])
    router.add_api_route("/stats", get_stats, methods=["GET"])
    app.include_router(router)
