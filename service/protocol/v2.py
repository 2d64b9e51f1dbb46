"""The Open Inference Protocol (KServe v2 / Triton) endpoints, binary tensor extension included."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import pydantic
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from service.errors import InvalidInput, InvalidJSON, InvalidTensor, validation_message
from service.input_spec import InputSpec
from service.model import RequestContext
from service.protocol import v2_binary
from service.protocol.decode import check_request_id, check_tensor, off_loop
from service.protocol.deps import CallerDep, DataPlaneDep
from service.protocol.openapi import body_ref
from service.protocol.schemas import (
    ErrorV2,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ReadyResponse,
    ServerMetadata,
    TensorMetadata,
)
from service.protocol.v2_extensions import EXTENSIONS, register_v2_extensions
from service.protocol.v2_outputs import INPUT_NAME, OUTPUTS, TRUST_OUTPUTS, served_outputs
from service.protocol.v2_repository import EXTENSIONS as REPOSITORY_EXTENSIONS
from service.protocol.v2_repository import register_v2_repository

SERVER_NAME = "gga-serve"
SERVER_VERSION = "0.1.0"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorV2} for code in (400, 401, 404, 413, 422, 429, 503)
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "An inference request (JSON), optionally followed by binary tensor data "
        "whose JSON length is given in the Inference-Header-Content-Length header.",
        "content": {"application/json": {"schema": body_ref(InferRequest)}},
    }
}


async def server_metadata() -> ServerMetadata:
    return ServerMetadata(
        name=SERVER_NAME,
        version=SERVER_VERSION,
        extensions=["binary_tensor_data", *EXTENSIONS, *REPOSITORY_EXTENSIONS],
    )


async def live() -> dict[str, bool]:
    return {"live": True}


async def ready(request: Request) -> JSONResponse:
    registry = request.app.state.registry
    is_ready = registry.ready
    # Ready models serve every batch size; "tuning" lists the buckets whose strategy is still
    # being measured in the background (served with the default one meanwhile).
    body = {"ready": is_ready, "tuning": registry.tuning()}
    return JSONResponse(body, status_code=200 if is_ready else 503)


async def model_metadata(name: str, dataplane: DataPlaneDep, caller: CallerDep) -> ModelMetadata:
    model = dataplane.model(name, require_ready=False)
    c, h, w = model.card.input_shape
    k = len(model.card.class_names)
    shapes = {"probabilities": [-1, k], "label": [-1], "trust_score": [-1]}
    return ModelMetadata(
        name=name,
        versions=[str(model.card.version)],
        platform="pytorch_gga",
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, c, h, w])],
        outputs=[
            TensorMetadata(name=n, datatype=t, shape=shapes.get(n, [-1]))
            for n, t in served_outputs(model).items()
        ],
        parameters={"warnings": model.warnings} if model.warnings else None,
    )


async def model_ready(name: str, dataplane: DataPlaneDep, caller: CallerDep) -> ReadyResponse:
    dataplane.model(name)  # raises ModelNotReady (503) while loading
    return ReadyResponse(ready=True)


def _input_array(req: InferRequest, raw: list[bytes | None]) -> np.ndarray:
    if len(req.inputs) != 1 or req.inputs[0].name != INPUT_NAME:
        names = [i.name for i in req.inputs]
        raise InvalidInput(f"expected one input named {INPUT_NAME!r}, got {names}")
    spec, blob = req.inputs[0], raw[0]
    if spec.datatype not in ("FP32", "FP64"):
        raise InvalidTensor(f"input {INPUT_NAME!r} must be FP32, got {spec.datatype}")
    count = v2_binary.element_count(spec.shape)
    if blob is not None:
        return v2_binary.from_bytes(spec.datatype, spec.shape, blob, INPUT_NAME)
    if spec.data is None:
        raise InvalidTensor(f"input {INPUT_NAME!r} has neither data nor binary_data_size")
    try:
        flat = np.asarray(spec.data, dtype=np.float32).reshape(-1)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidTensor(f"input {INPUT_NAME!r}: data must be numbers ({err})") from err
    if flat.size != count:
        raise InvalidTensor(
            f"input {INPUT_NAME!r}: {flat.size} values do not fill shape {spec.shape}"
        )
    return flat.reshape(spec.shape)


def _wanted_outputs(req: InferRequest, outputs: dict[str, str]) -> list[tuple[str, bool]]:
    default_binary = bool((req.parameters or {}).get("binary_data_output", False))
    if not req.outputs:
        return [(name, default_binary) for name in outputs]
    wanted = []
    for out in req.outputs:
        if out.name in TRUST_OUTPUTS and out.name not in outputs:
            raise InvalidInput(
                f"output {out.name!r}: this model has no trust detector yet (see its metadata's "
                "warnings); ask for the other outputs"
            )
        if out.name not in outputs:
            raise InvalidInput(f"unknown output {out.name!r}; known: {', '.join(outputs)}")
        wanted.append((out.name, bool((out.parameters or {}).get("binary_data", default_binary))))
    return wanted


def decode_infer_request(
    body: bytes, header_length: str | None, spec: InputSpec
) -> tuple[InferRequest, Any]:
    """Parse and check an inference request body (CPU work: runs on the decode pool).

    Returns:
        The request and its (N, C, H, W) input tensor.

    Raises:
        InvalidInput, InvalidJSON, InvalidTensor, TooManyImages: See messages.
    """
    header, tail = v2_binary.split_body(body, header_length)
    try:
        req = InferRequest.model_validate_json(header)
    except pydantic.ValidationError as err:
        raise InvalidJSON(f"inference request {validation_message(err.errors(), 'body')}") from err
    if req.id is not None:
        check_request_id(req.id, "id")
    raw = v2_binary.binary_slices(
        [(i.parameters or {}).get("binary_data_size") for i in req.inputs], tail
    )
    array = _input_array(req, raw)
    if array.ndim == 3 and spec.input_shape[0] == 1:
        array = array[:, None]  # [N, H, W] grey images
    if array.ndim != 4:
        raise InvalidTensor(f"input {INPUT_NAME!r} must be [N, C, H, W] or [N, H, W]")
    return req, check_tensor(np.asarray(array, dtype=np.float32), spec)


async def infer(
    name: str, request: Request, dataplane: DataPlaneDep, caller: CallerDep
) -> Response:
    """Run an inference request (JSON or with binary tensor data)."""
    target = dataplane.resolve(name)
    req, inputs = await off_loop(
        request,
        decode_infer_request,
        await request.body(),
        request.headers.get(v2_binary.HEADER_LENGTH),
        target.spec,
    )
    wanted = _wanted_outputs(req, served_outputs(target.model))
    request_id = req.id or uuid.uuid4().hex
    context = RequestContext(request_id=request_id, owner=caller)
    predictions = await dataplane.predict(target, inputs, context)
    out = predictions.out
    arrays = {
        "probabilities": out.probabilities,
        "label": out.labels,
        "trust_score": out.trust.astype(np.float32),  # NaN without a detector
        "flagged": out.flagged,
        "prediction_id": [prediction_id.encode() for prediction_id in predictions.ids],
    }
    return _encode(name, predictions.model_version, request_id, wanted, arrays)


def _encode(
    name: str,
    version: str,
    request_id: str,
    wanted: list[tuple[str, bool]],
    arrays: dict[str, Any],
) -> Response:
    outputs, blobs = [], []
    for out_name, binary in wanted:
        datatype = OUTPUTS[out_name]
        values = arrays[out_name]
        shape = list(np.shape(values)) if datatype != "BYTES" else [len(values)]
        entry: dict[str, Any] = {"name": out_name, "datatype": datatype, "shape": shape}
        if binary:
            blob = v2_binary.to_bytes(datatype, values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [v.decode() for v in values]
        else:
            entry["data"] = np.asarray(values).reshape(-1).tolist()
        outputs.append(entry)
    body = InferResponse(
        model_name=name, model_version=str(version), id=request_id, outputs=outputs
    ).model_dump(exclude_none=True)
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={v2_binary.HEADER_LENGTH: str(len(header))},
    )


def register_v2_endpoints(app: FastAPI) -> None:
    """Add the Open Inference Protocol routes to ``app``."""
    router = APIRouter(prefix="/v2", tags=["v2"], responses=ERRORS)
    router.add_api_route("", server_metadata, methods=["GET"])
    router.add_api_route("/health/live", live, methods=["GET"])
    router.add_api_route("/health/ready", ready, methods=["GET"])
    register_v2_extensions(router)  # before /models/{name}: /models/stats is not a model
    register_v2_repository(router)
    router.add_api_route("/models/{name}", model_metadata, methods=["GET"])
    router.add_api_route("/models/{name}/ready", model_ready, methods=["GET"])
    router.add_api_route(
        "/models/{name}/infer",
        infer,
        methods=["POST"],
        openapi_extra=INFER_BODY,
        response_model=InferResponse,
    )
    app.include_router(router)
