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
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import GGAUserError
from service.access import UnsafeModelControl, is_loopback, open_control_refusal
from service.auth import Authenticator
from service.console import mount_console
from service.dataplane import DataPlane
from service.errorlog import ThrottledLog
from service.errors import InvalidInput, ServiceError, StoreUnavailable, validation_message
from service.flag_quality import watch_flag_quality
from service.keys_api import register_key_endpoints
from service.metrics import RejectReason, ServiceMetrics, render
from service.protocol.middleware import (
    AdmissionMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    error_body,
)
from service.protocol.openapi import install_body_schemas
from service.protocol.schemas import InferRequest, PredictJSON
from service.protocol.v1 import register_v1_endpoints
from service.protocol.v2 import register_v2_endpoints
from service.ratelimit import InFlightLimiter, build_rate_limiter
from service.registry import ModelRegistry
from service.settings import Settings
from service.store import Database
from service.store.errors import is_unavailable
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
    return _respond(request, InvalidInput(validation_message(err.errors(), "request")))


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    response = _respond(request, _HTTPError(err.status_code, str(err.detail)))
    response.headers.update(err.headers or {})
    return response


async def _store_error(request: Request, err: Exception) -> JSONResponse:
    # A store that cannot be reached while a key is checked or predictions are read is the
    # service's condition, not a bug: 503 + Retry-After on every path (the persist path raises
    # StoreUnavailable itself). Any other store error is a bug and stays a 500.
    if not is_unavailable(err):
        raise err
    return await _service_error(request, StoreUnavailable(type(err).__name__, writing=False))


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
    # FastAPIOffline: /docs and /redoc load their scripts from the package, not from a CDN.
    app = FastAPIOffline(
        static_url="/docs-assets",
        title="gga-serve",
        version="0.1.0",
        description="Image classifiers with a Geometric Gradient Analysis trust score on every "
        "prediction. Native API under /v1, Open Inference Protocol under /v2.",
        lifespan=_lifespan,
    )
    _build_state(app, settings, metrics)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(GGAUserError, _user_error)
    app.add_exception_handler(SQLAlchemyError, _store_error)
    register_v1_endpoints(app)
    register_v2_endpoints(app)
    register_key_endpoints(app)
    install_body_schemas(app, [PredictJSON, InferRequest])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = render(metrics.registry)
        return Response(body, media_type=content_type)

    mount_console(app)
    _add_middleware(app, settings, metrics, app.state.registry)
    return app


def _build_state(app: FastAPI, settings: Settings, metrics: ServiceMetrics) -> None:
    """The collaborators endpoints receive (``protocol/deps.py``), on ``app.state``."""
    db = Database(settings.database_url)
    registry = ModelRegistry.from_settings(settings, db, metrics)
    app.state.settings = settings
    app.state.store_ready = False
    app.state.metrics = metrics
    app.state.db = db
    app.state.registry = registry
    app.state.auth = Authenticator(
        db,
        settings.api_keys,
        required=settings.api_keys_required,
        pepper=settings.key_pepper,
        cache_s=settings.auth_cache_s,
    )
    app.state.maintenance = StoreMaintenance(
        db,
        metrics,
        retention_days=settings.retention_days,
        prune_interval_s=settings.prune_interval_s,
    )
    app.state.error_log = ThrottledLog(logger)
    # Image and tensor decoding is CPU work; on the event loop it would stall every other client
    # (and the health checks) for as long as one large body takes.
    app.state.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
    app.state.limiter = build_rate_limiter(
        settings.rate_limit, settings.rate_limit_burst, settings.redis_url, settings.redis_prefix
    )
    app.state.in_flight = InFlightLimiter(settings.caller_concurrency)
    app.state.dataplane = DataPlane(registry, db, settings)
    # The gauges of what /v1/stats serves as flag_quality, recounted off the request path.
    watch_flag_quality(metrics, db, registry)


def _add_middleware(
    app: FastAPI, settings: Settings, metrics: ServiceMetrics, models: ModelRegistry
) -> None:
    """Body limit, admission control and request metrics, outermost added last.

    Metrics see every answer, including the body limit's 413 and the admission control's 503;
    both get the registry itself, not a copy of its names: models load and unload while serving.
    """
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AdmissionMiddleware,
        latency_budget_s=settings.queue_budget_s,
        floor=2 * settings.max_batch_size,
        models=models,
        on_refuse=lambda model: metrics.observe_rejection(model, RejectReason.OVERLOADED),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, models=models)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    await asyncio.to_thread(_start, app)
    try:
        yield
    finally:
        await asyncio.to_thread(_stop, app)
        await app.state.limiter.close()


def _start(app: FastAPI) -> None:
    """Migrate (or wait for) the store, start its maintenance, load every model."""
    settings: Settings = app.state.settings
    configure_torch_threads(settings.torch_threads)
    if settings.run_migrations:
        app.state.db.upgrade()  # under the migration lock: concurrent replicas take turns
    else:
        wait_until_current(settings.database_url, SCHEMA_WAIT_S)
    keyed = app.state.auth.enabled
    if settings.model_control == "explicit" and not keyed and not is_loopback(settings.host):
        raise UnsafeModelControl(
            "refusing to start with GGA_MODEL_CONTROL=explicit and no API key: "
            + open_control_refusal(settings.host)
        )
    app.state.store_ready = True
    app.state.maintenance.start()
    app.state.registry.load_all()
    if keyed:
        logger.info("API keys required on every endpoint but health and metrics")
    else:
        logger.warning(
            "no API keys configured: the service is OPEN to anyone who can reach it "
            "(create one with `gga keys create`)"
        )
    if settings.model_control == "explicit":
        logger.warning(
            "repository control is on (GGA_MODEL_CONTROL=explicit): %s may load and unload models",
            "admin keys" if keyed else "anyone on this machine",
        )


def _stop(app: FastAPI) -> None:
    app.state.registry.stop_all()  # drains each queue; every batch commits before its responses
    app.state.maintenance.stop()
    app.state.decode_pool.shutdown(wait=False, cancel_futures=True)
    app.state.db.dispose()
    logger.info("stopped: queues drained, store closed")
