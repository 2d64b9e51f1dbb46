"""``create_app(settings)``: the FastAPI application, its lifecycle and its one error handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import GGAUserError
from service.auth import Authenticator
from service.console import mount_console
from service.dataplane import DataPlane
from service.errorlog import ThrottledLog
from service.errors import InvalidInput, ServiceError
from service.metrics import ServiceMetrics, render
from service.protocol.middleware import (
    AdmissionControl,
    AdmissionMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    error_body,
)
from service.protocol.openapi import install_body_schemas
from service.protocol.schemas import InferRequest, PredictJSON
from service.protocol.v1 import register_v1_endpoints
from service.protocol.v2 import register_v2_endpoints
from service.ratelimit import build_rate_limiter
from service.registry import ModelRegistry
from service.settings import Settings
from service.store import Database
from service.store.maintenance import StoreMaintenance
from service.store.migrate import wait_until_current
from service.threads import configure_torch_threads

logger = logging.getLogger(__name__)
# How long a replica told not to migrate waits for the migrate job to bring the schema to head.
SCHEMA_WAIT_S = 120.0


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
        # The service's condition (overload, shutdown, store down): logged in aggregate.
        request.app.state.error_log.warning(
            int(err.status),
            err.code,
            "%s %s -> %s: %s",
            request.method,
            request.url.path,
            int(err.status),
            err,
        )
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
    maintenance = StoreMaintenance(
        db,
        metrics,
        retention_days=settings.retention_days,
        prune_interval_s=settings.prune_interval_s,
    )
    # Image and tensor decoding is CPU work; on the event loop it would stall every other client
    # (and the health checks) for as long as one large body takes.
    decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")

    def start() -> None:
        configure_torch_threads(settings.torch_threads)
        if settings.run_migrations:
            db.upgrade()  # under the migration lock: concurrent replicas take turns
        else:
            wait_until_current(settings.database_url, SCHEMA_WAIT_S)
        app.state.store_ready = True
        maintenance.start()
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
        maintenance.stop()
        decode_pool.shutdown(wait=False, cancel_futures=True)
        db.dispose()
        logger.info("stopped: queues drained, store closed")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(start)
        try:
            yield
        finally:
            await asyncio.to_thread(stop)
            await app.state.limiter.close()

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
    app.state.maintenance = maintenance
    app.state.error_log = ThrottledLog(logger)
    app.state.decode_pool = decode_pool
    app.state.limiter = build_rate_limiter(
        settings.rate_limit, settings.rate_limit_burst, settings.redis_url, settings.redis_prefix
    )
    app.state.dataplane = DataPlane(registry, db, settings)

    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(GGAUserError, _user_error)

    register_v1_endpoints(app)
    register_v2_endpoints(app)
    install_body_schemas(app, [PredictJSON, InferRequest])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = render(metrics.registry)
        return Response(body, media_type=content_type)

    # Outermost first: metrics see every answer, including the body limit's 413 and the
    # admission control's 503.
    # The registry itself, not a copy of its names: models load and unload while serving.
    names = registry
    app.state.admission = AdmissionControl(
        latency_budget_s=settings.queue_budget_s, floor=2 * settings.max_batch_size
    )
    mount_console(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AdmissionMiddleware,
        control=app.state.admission,
        on_refuse=lambda model: metrics.observe_rejection(
            model if model in names else "", "overloaded"
        ),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, models=names)
    return app
