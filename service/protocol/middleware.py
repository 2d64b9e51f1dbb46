"""Pure ASGI middleware: the body-size limit (before the body is read), admission control (the
service's load shedder) and request metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Container
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, Overloaded, ServiceError
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
        models: Served model names (the live registry: models load and unload); other path
            values are recorded as ``""`` so the ``model`` label stays bounded whatever clients
            send.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, models: Container[str]) -> None:
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


class AdmissionControl:
    """How many of one model's prediction requests may be in the server at once.

    The service's one load shedder. By Little's law a request admitted behind ``in_flight``
    others waits about ``in_flight / completion_rate``. Requests are admitted while that stays
    within ``latency_budget_s``; beyond it they are refused at once, before their body is decoded,
    so the requests accepted are answered within about the budget instead of every request
    waiting longer and longer. In flight counts all of a request's time in the server (its body
    read and decoded, queued, computed, stored, its response written), which the batcher's queue
    alone does not see. ``floor`` in-flight requests are always admitted, so micro-batches can
    still fill.

    Args:
        latency_budget_s: Target time a request spends in the server; 0 turns control off.
        floor: Requests always admitted.
        window_s: Completions are counted over windows this long (an EWMA of their rates).
    """

    def __init__(self, latency_budget_s: float, floor: int, window_s: float = 1.0) -> None:
        self.latency_budget_s = latency_budget_s
        self.floor = max(1, floor)
        self.window_s = window_s
        self.in_flight = 0
        self.rate: float | None = None  # completions per second
        self._window_start = time.monotonic()
        self._window_done = 0

    @property
    def limit(self) -> int | None:
        """Requests admitted at once now; None while unlimited (off, or no rate measured)."""
        if self.latency_budget_s <= 0 or self.rate is None:
            return None
        return max(self.floor, int(self.rate * self.latency_budget_s))

    def try_admit(self) -> bool:
        limit = self.limit
        if limit is not None and self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def done(self) -> None:
        self.in_flight -= 1
        self._window_done += 1
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= self.window_s:
            rate = self._window_done / elapsed
            self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
            self._window_start, self._window_done = now, 0


class AdmissionMiddleware:
    """Refuse a model's prediction requests over its :class:`AdmissionControl` limit with 503.

    Only ``POST`` to a served model's predict or infer route counts, each model on its own (a
    slow model's backlog never refuses another's requests); health checks, metrics, reads and
    unknown models are never refused here. Runs on the event loop only, so the counters need no
    lock.

    Args:
        app: The wrapped application.
        latency_budget_s: See :class:`AdmissionControl`.
        floor: See :class:`AdmissionControl`.
        models: Served model names (the live registry: models load and unload while serving).
        on_refuse: Called with the model name (for the rejection counter) on each refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        latency_budget_s: float,
        floor: int,
        models: Container[str],
        on_refuse: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.latency_budget_s = latency_budget_s
        self.floor = floor
        self.models = models
        self.on_refuse = on_refuse or (lambda _model: None)
        # One per name ever served: bounded by the repository, never by what clients send.
        self.controls: dict[str, AdmissionControl] = {}

    def _model_of(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        parts = scope["path"].strip("/").split("/")
        # /v1/models/{name}/predict and /v2/models/{name}/infer (and .../versions/{v}/infer)
        if len(parts) >= 4 and parts[1] == "models" and parts[-1] in ("predict", "infer"):
            return parts[2] if parts[2] in self.models else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self._model_of(scope)
        if model is None:
            await self.app(scope, receive, send)
            return
        control = self.controls.get(model)
        if control is None:
            control = self.controls[model] = AdmissionControl(self.latency_budget_s, self.floor)
        if not control.try_admit():
            self.on_refuse(model)
            await self._drain(receive)
            await self._refuse(scope, send, model, control)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            control.done()

    @staticmethod
    async def _drain(receive: Receive) -> None:
        """Read and drop the body (the body limit still applies): a client still uploading
        would otherwise see its connection closed under it instead of the 503."""
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    @staticmethod
    async def _refuse(scope: Scope, send: Send, model: str, control: AdmissionControl) -> None:
        err = Overloaded(model, control.in_flight, control.latency_budget_s)
        body = json.dumps(error_body(scope["path"], err)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": int(err.status),
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in err.headers.items()),
                    (b"x-gga-admission-limit", str(control.limit or 0).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
