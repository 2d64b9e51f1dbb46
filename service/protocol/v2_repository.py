"""The model repository extension of the Open Inference Protocol: index, load, unload.

``tritonclient``'s ``get_model_repository_index``, ``load_model`` and ``unload_model`` call these.
Models come from the server's own repository (``gga import`` and ``gga fit`` write there): a
``load`` request that carries a config or files to write is refused, as the repository is the
one source of models. Loading and draining run off the event loop, so other models, and the
model being replaced, keep answering meanwhile.

Control is off by default, as in Triton (``--model-control-mode=none``): ``load`` and ``unload``
answer 403 until the server runs with ``GGA_MODEL_CONTROL=explicit``, and then need an admin key
(in open mode: a server listening on loopback only). The index is a read: any valid key.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request, Response

from models.errors import GGAUserError
from service.access import check_model_control
from service.errors import InvalidInput, InvalidJSON, ServiceError
from service.protocol.deps import CallerDep, DataPlaneDep, IdentityDep, SettingsDep
from service.protocol.schemas import ErrorV2

EXTENSIONS = ["model_repository"]


async def _parameters(request: Request) -> dict[str, Any]:
    """The request's ``parameters`` object (an empty body is an empty request)."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidJSON(f"repository request body is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise InvalidJSON("repository request body must be a JSON object")
    parameters = data.get("parameters", data if "ready" in data else {})
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be a JSON object")
    return parameters


async def repository_index(
    request: Request, dataplane: DataPlaneDep, caller: CallerDep
) -> list[dict[str, Any]]:
    """Every model of the repository with its state (``{"ready": true}``: the ready ones only)."""
    parameters = await _parameters(request)
    entries = await asyncio.to_thread(dataplane.registry.index)
    if parameters.get("ready") is True:
        entries = [e for e in entries if e["state"] == "READY"]
    return entries


async def load_model(
    name: str,
    request: Request,
    dataplane: DataPlaneDep,
    identity: IdentityDep,
    settings: SettingsDep,
) -> Response:
    """Load (or reload) ``name`` from the repository, with its detector, warmed up."""
    check_model_control(identity, settings.model_control, settings.host)
    parameters = await _parameters(request)
    extra = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
    if extra:
        raise InvalidInput(
            f"load {name!r}: {extra} not supported; models are loaded from the server's "
            "repository as they are (write them there with `gga import` and `gga fit`)"
        )
    try:
        await asyncio.to_thread(dataplane.registry.load, name)
    except ServiceError:
        raise
    except GGAUserError as err:  # a folder that cannot serve: the operator's to fix
        raise InvalidInput(f"model {name!r} cannot be loaded: {err}") from err
    return Response(status_code=200)


async def unload_model(
    name: str,
    request: Request,
    dataplane: DataPlaneDep,
    identity: IdentityDep,
    settings: SettingsDep,
) -> Response:
    """Stop serving ``name`` once the requests it accepted are answered."""
    check_model_control(identity, settings.model_control, settings.host)
    await _parameters(request)
    await asyncio.to_thread(dataplane.registry.unload, name)
    return Response(status_code=200)


def register_v2_repository(router: APIRouter) -> None:
    """Add the repository routes to the v2 router."""
    router.add_api_route("/repository/index", repository_index, methods=["POST"])
    # 403: control off (GGA_MODEL_CONTROL=none), or a caller that may not control it.
    refused: dict[int | str, dict[str, Any]] = {403: {"model": ErrorV2}}
    for action, handler in (("load", load_model), ("unload", unload_model)):
        router.add_api_route(
            f"/repository/models/{{name}}/{action}", handler, methods=["POST"], responses=refused
        )
