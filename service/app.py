"""``create_app(settings)``: the FastAPI application, its lifecycle and its one error handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import GGAUserError
from service.auth import Authenticator, RateLimiter
from service.console import mount_console
from service.dataplane import DataPlane
from service.errors import InvalidInput, ServiceError
from service.metrics import ServiceMetrics, render
from service.protocol.middleware import BodyLimitMiddleware, MetricsMiddleware, error_body
from service.protocol.v1 import register_v1_endpoints
from service.protocol.v2 import register_v2_endpoints
from service.registry import ModelRegistry
from service.settings import Settings
from service.store import Database

logger = logging.getLogger(__name__)


class _HTTPError(ServiceError):
    """A routing-level error (unknown path, wrong method) in our error shapes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[assignment]
        self.code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")


def _respond(request: Request, err: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(request.url.path, err), status_code=int(err.status), headers=err.headers
    )


async def _service_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ServiceError)
    if int(err.status) >= 500:
        logger.warning("%s %s -> %s: %s", request.method, request.url.path, err.status, err)
    return _respond(request, err)


async def _validation_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ())) or "request"
    return _respond(request, InvalidInput(f"{where}: {first.get('msg')}"))


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    response = _respond(request, _HTTPError(err.status_code, str(err.detail)))
    response.headers.update(err.headers or {})
    return response


async def _user_error(request: Request, err: Exception) -> JSONResponse:
    # A library's user error that the service did not translate is still the client's or the
    # operator's to fix, never a crash: answer 422 with its message.
    return _respond(request, InvalidInput(str(err)))


def create_app(settings: Settings, metrics: ServiceMetrics | None = None) -> FastAPI:
    """Build the service; models load and the store migrates when the app starts.

    Args:
        settings: The configuration (see docs/configuration.md).
        metrics: Metrics to record into (a fresh registry when None).

    Returns:
        The ASGI application; ``/v2/health/ready`` answers 200 once every model is loaded.
    """
    metrics = metrics or ServiceMetrics()
    db = Database(settings.database_url)
    registry = ModelRegistry.from_settings(settings, db, metrics)
    auth = Authenticator(
        db, settings.api_keys, required=settings.api_keys_required, pepper=settings.key_pepper
    )

    def start() -> None:
        db.upgrade()
        app.state.store_ready = True
        registry.load_all()
        if auth.enabled:
            logger.info("API keys required on every endpoint but health and metrics")
        else:
            logger.warning(
                "no API keys configured: the service is OPEN to anyone who can reach it "
                "(create one with `gga keys create`)"
            )

    def stop() -> None:
        registry.stop_all()  # drains each queue; every batch commits before its responses
        db.dispose()
        logger.info("stopped: queues drained, store closed")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(start)
        try:
            yield
        finally:
            await asyncio.to_thread(stop)

    # FastAPIOffline: /docs and /redoc load their scripts from the package, not from a CDN.
    app = FastAPIOffline(
        static_url="/docs-assets",
        title="gga-serve",
        version="0.1.0",
        description="Image classifiers with a Geometric Gradient Analysis trust score on every "
        "prediction. Native API under /v1, Open Inference Protocol under /v2.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store_ready = False
    app.state.metrics = metrics
    app.state.db = db
    app.state.registry = registry
    app.state.auth = auth
    app.state.limiter = RateLimiter(settings.rate_limit, settings.rate_limit_burst)
    app.state.dataplane = DataPlane(registry, db, settings)

    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(GGAUserError, _user_error)

    register_v1_endpoints(app)
    register_v2_endpoints(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = render(metrics.registry)
        return Response(body, media_type=content_type)

    mount_console(app)

    # Outermost first: metrics see every answer, including the body limit's 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, models=set(registry.names()))
    return app
