"""Pure ASGI middleware: the body-size limit (before the body is read) and request metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, ServiceError
from service.metrics import ServiceMetrics


def error_body(path: str, err: ServiceError) -> dict[str, Any]:
    """The error body of ``path``'s protocol: v2 ``{"error": msg}``, else v1 with a code."""
    if path.startswith("/v2"):
        return {"error": err.message}
    return {"error": {"code": err.code, "message": err.message}}


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, without reading more than the limit.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a chunked or
    understated body is counted while the endpoint reads it, and reading stops with
    ``BodyTooLarge`` (413) at the first byte over.

    Args:
        app: The wrapped application.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False
            if too_large:
                await self._refuse(scope, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        err = BodyTooLarge(self.max_bytes)
        body = json.dumps(error_body(scope["path"], err)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": int(err.status),
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The client may still be sending; tell it the connection will not be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Count every HTTP request by model, route template and status, and time it.

    Args:
        app: The wrapped application.
        metrics: Where to record.
        models: Served model names; other path values are recorded as ``""`` so the ``model``
            label stays bounded whatever clients send.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, models: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.models = models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            name = (scope.get("path_params") or {}).get("name", "")
            model = name if name in self.models else ""
            self.metrics.observe_request(model, endpoint, status, time.perf_counter() - start)
