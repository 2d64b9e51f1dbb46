"""``Gateway``: the HTTP ingress of the Ray Serve application.

A Starlette app (no torch, no models) behind Ray's HTTP proxy. Every request is forwarded whole to
a ``ModelServer`` replica through a deployment handle; Ray picks the replica (fewest requests in
flight of two sampled). ``GGA_MAX_BODY_BYTES`` is enforced first in Ray's HTTP proxy
(``proxy_limit.py``), before Ray queues a body; the gateway checks it again as the plain server
does (a declared ``Content-Length`` over it answered 413 before any byte is read, a chunked body
refused at the first chunk over), for a Serve whose proxies were started without that limit:
there, Ray's replica wrapper pulls the whole body into this process before the gateway's check
can refuse it (docs/deployment.md). A replica that dies with the request in flight
(``kill -9``, a lost node) is answered 503 with ``Retry-After``, as an overloaded one is: the
request was not acknowledged, and whatever it stored before dying stays stored.
``GET /metrics/targets`` lists every live replica's metrics endpoint in Prometheus'
``http_sd_configs`` format.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import BodyTooLarge
from service.protocol.middleware import error_body
from service.ray_serve import APP_NAME, MODEL_DEPLOYMENT
from service.ray_serve.asgi_call import ForwardedRequest
from service.ray_serve.replica import targets_key

logger = logging.getLogger(__name__)

# Response headers the app sets that the proxy in front recomputes.
_HOP_BY_HOP = {b"content-length", b"connection", b"keep-alive", b"transfer-encoding"}


def _unavailable(message: str, retry_after_s: int = 1) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "replica_unavailable", "message": message}},
        status_code=503,
        headers={"Retry-After": str(retry_after_s)},
    )


def _too_large(path: str, max_bytes: int) -> JSONResponse:
    # The client may still be sending: the connection will not be reused.
    return JSONResponse(
        error_body(path, BodyTooLarge(max_bytes)), status_code=413, headers={"Connection": "close"}
    )


def _declared_too_large(request: Request, max_bytes: int) -> bool:
    declared = request.headers.get("content-length")
    try:
        return declared is not None and int(declared) > max_bytes
    except ValueError:
        return False


async def _read_body(request: Request, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as more than ``max_bytes`` has arrived."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def _is_replica_failure(err: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import (
        BackPressureError,
        DeploymentUnavailableError,
        ReplicaUnavailableError,
    )

    failures = (
        ActorDiedError,
        ActorUnavailableError,
        RayActorError,
        BackPressureError,
        DeploymentUnavailableError,
        ReplicaUnavailableError,
    )
    return isinstance(err, failures)


def build_gateway_app(
    redis_url: str | None, redis_prefix: str, max_body_bytes: int = 10 * 1024 * 1024
) -> Starlette:
    """The gateway's ASGI app.

    Args:
        redis_url: Where replicas register their metrics endpoints (None: no discovery).
        redis_prefix: Key prefix shared with the replicas.
        max_body_bytes: Largest request body forwarded (``GGA_MAX_BODY_BYTES``); larger: 413.

    Returns:
        The Starlette application.
    """
    handle_box: dict[str, Any] = {}
    redis_box: dict[str, Any] = {}

    def handle() -> Any:
        if "handle" not in handle_box:
            from ray import serve

            handle_box["handle"] = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=APP_NAME)
        return handle_box["handle"]

    async def forward(request: Request) -> Response:
        if _declared_too_large(request, max_body_bytes):
            return _too_large(request.url.path, max_body_bytes)
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return _too_large(request.url.path, max_body_bytes)
        forwarded = ForwardedRequest(
            method=request.method,
            path=request.url.path,
            query_string=request.scope.get("query_string", b""),
            headers=list(request.scope["headers"]),
            body=body,
            client=request.scope.get("client"),
        )
        try:
            answer = await handle().handle.remote(forwarded)
        except Exception as err:
            if _is_replica_failure(err):
                logger.warning("replica failed under a request: %s", type(err).__name__)
                return _unavailable(
                    "the replica serving this request went away; nothing was acknowledged, retry"
                )
            raise
        headers = [(k, v) for k, v in answer.headers if k.lower() not in _HOP_BY_HOP]
        response = Response(answer.body, status_code=answer.status)
        response.raw_headers = [
            *[(k, v) for k, v in response.raw_headers if k == b"content-length"],
            *headers,
        ]
        return response

    async def metrics_targets(_request: Request) -> Response:
        if not redis_url:
            return JSONResponse([])
        if "client" not in redis_box:
            import redis.asyncio as aioredis

            redis_box["client"] = aioredis.from_url(redis_url, socket_timeout=1.0)
        client = redis_box["client"]
        entries = []
        async for key in client.scan_iter(match=targets_key(redis_prefix), count=100):
            raw = await client.get(key)
            if raw:
                entries.append(json.loads(raw))
        groups = [
            {"targets": [e["target"]], "labels": {"replica": e["replica"]}}
            for e in sorted(entries, key=lambda e: e["target"])
        ]
        return JSONResponse(groups)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/metrics/targets", metrics_targets, methods=["GET"]),
            Route("/{path:path}", forward, methods=methods),
        ]
    )
