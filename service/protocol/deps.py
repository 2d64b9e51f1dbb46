"""Typed FastAPI dependencies: the collaborators endpoints receive rather than build."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.access import ANONYMOUS, CLASSIFY_ROUTES, Caller, check_may_classify
from service.auth import Authenticator, token_from_headers
from service.dataplane import DataPlane
from service.errors import RateLimited, ServiceStarting
from service.metrics import RejectReason, ServiceMetrics
from service.ratelimit import InFlightLimiter, RateLimiter
from service.settings import Settings


def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def client_address(request: Request) -> str:
    """The client's address (the forwarded one behind a proxy in GGA_FORWARDED_ALLOW_IPS)."""
    return request.client.host if request.client is not None else "unknown"


async def get_caller(request: Request) -> AsyncIterator[str | None]:
    """The caller's API key id (None in open mode), within the caller's limits.

    The caller is identified (``GGA_AUTH_CACHE_S`` spares the store most lookups), checked
    against what the route needs (a read key may not classify), and counted among the caller's
    requests in the server until the response is sent: per API key when keys are on, per
    client address in open mode.

    Raises:
        ServiceStarting: The store is not migrated yet.
        Unauthorized: Keys are on and none valid was sent.
        ScopeTooNarrow: The key may not call this route.
        RateLimited: The caller's token bucket is empty (``GGA_RATE_LIMIT``), or it already has
            ``GGA_CALLER_CONCURRENCY`` requests in the server (``TooManyInFlight``).
    """
    caller = await _identify(request)
    route = request.scope.get("route")
    if getattr(route, "path", None) in CLASSIFY_ROUTES:
        check_may_classify(caller)
    name = f"key:{caller.key_id}" if caller.key_id else f"addr:{client_address(request)}"
    in_flight: InFlightLimiter = request.app.state.in_flight
    try:
        limiter: RateLimiter = request.app.state.limiter
        await limiter.acquire(name)
        in_flight.enter(name)
    except RateLimited:
        model = request.path_params.get("name", "")
        model = model if model in request.app.state.registry else ""
        request.app.state.metrics.observe_rejection(model, RejectReason.RATE_LIMITED)
        raise
    request.state.caller = caller
    try:
        yield caller.key_id
    finally:  # after the response is sent (or the request failed)
        in_flight.leave(name)


async def _identify(request: Request) -> Caller:
    """Who sent ``request``: the anonymous caller in open mode, else its key's caller.

    The store is read only when the cached answers are stale, and then off the event loop; a
    store that cannot be reached raises the driver's error, which the app answers with 503.
    """
    if not request.app.state.store_ready:
        raise ServiceStarting()
    auth: Authenticator = request.app.state.auth
    if auth.stale:
        await asyncio.to_thread(auth.refresh)
    if not auth.keys_on:
        return ANONYMOUS
    token = token_from_headers(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    known = auth.cached(token)
    if known is not None:
        return known
    return await asyncio.to_thread(auth.authenticate, token)


CallerDep = Annotated[str | None, Depends(get_caller)]


def get_identity(request: Request, _key_id: CallerDep) -> Caller:
    """The request's :class:`Caller` (its key's scope included), after :func:`get_caller`."""
    return request.state.caller


def get_reader(identity: Annotated[Caller, Depends(get_identity)]) -> str | None:
    """Whose stored predictions the caller reads: its own key's (predict keys), or every key's
    (None: read and admin keys, and everyone in open mode)."""
    return identity.reader


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
IdentityDep = Annotated[Caller, Depends(get_identity)]
ReaderDep = Annotated[str | None, Depends(get_reader)]
