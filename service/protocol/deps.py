"""Typed FastAPI dependencies: the collaborators endpoints receive rather than build."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from service.auth import Authenticator, token_from_headers
from service.dataplane import DataPlane
from service.errors import RateLimited, ServiceStarting
from service.metrics import RejectReason, ServiceMetrics
from service.ratelimit import RateLimiter
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


async def get_caller(request: Request) -> str | None:
    """The caller's API key id (None in open mode), after the caller's rate limit.

    The rate limit applies to every caller: per API key when keys are on, per client address in
    open mode.

    Raises:
        ServiceStarting: The store is not migrated yet.
        Unauthorized: Keys are on and none valid was sent.
        RateLimited: The caller's bucket is empty.
    """
    if not request.app.state.store_ready:
        raise ServiceStarting()
    auth: Authenticator = request.app.state.auth
    if auth.stale:  # the store is read only every few seconds, off the event loop
        await asyncio.to_thread(auth.refresh)
    key_id = None
    if auth.enabled:
        token = token_from_headers(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        key_id = await asyncio.to_thread(auth.authenticate, token)
    limiter: RateLimiter = request.app.state.limiter
    try:
        await limiter.acquire(f"key:{key_id}" if key_id else f"addr:{client_address(request)}")
    except RateLimited:
        name = request.path_params.get("name", "")
        model = name if name in request.app.state.registry else ""
        request.app.state.metrics.observe_rejection(model, RejectReason.RATE_LIMITED)
        raise
    return key_id


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
CallerDep = Annotated[str | None, Depends(get_caller)]
