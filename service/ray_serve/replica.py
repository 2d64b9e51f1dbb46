"""``ModelServer``: one Ray Serve replica running the whole gga-serve app in process.

Each replica reads its settings from ``GGA_*`` environment variables (the deployment's
``runtime_env``), runs the app's lifespan (it never migrates: the driver did, once), serves its
metrics on a port of its own and registers that endpoint in Redis for the gateway's Prometheus
service discovery. Its dynamic batcher, queue budget and store writes are those of ``gga serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

from service.ray_serve.asgi_call import ForwardedRequest, ForwardedResponse, call_asgi

logger = logging.getLogger(__name__)

TARGET_TTL_S = 30
TARGET_REFRESH_S = 10


def targets_key(prefix: str, replica_id: str = "*") -> str:
    """Redis key under which a replica registers its metrics endpoint."""
    return f"{prefix}:metrics-target:{replica_id}"


class ModelServer:
    """The gga-serve app inside a Ray Serve replica (constructed by Ray, ``async`` init)."""

    async def __init__(self) -> None:
        from prometheus_client import start_http_server
        from ray import serve

        from service.app import create_app
        from service.settings import get_settings

        settings = get_settings()
        self.settings = settings
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id if context else f"local-{os.getpid()}"
        self.app = create_app(settings)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # migrate-wait, load models, warm up, start batchers
        host = _node_ip()
        server, _thread = start_http_server(
            settings.metrics_port, addr=host, registry=self.app.state.metrics.registry
        )
        self.metrics_server = server
        self.metrics_target = f"{host}:{server.server_port}"
        self._redis: Any = None
        self._register_task: asyncio.Task[None] | None = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(settings.redis_url, socket_timeout=1.0)
            self._register_task = asyncio.get_running_loop().create_task(self._register())
        logger.info("replica %s ready; metrics at %s", self.replica_id, self.metrics_target)

    async def _register(self) -> None:
        """Keep this replica's metrics endpoint in Redis while it lives (expires when it dies)."""
        key = targets_key(self.settings.redis_prefix, self.replica_id)
        value = json.dumps(
            {"target": self.metrics_target, "replica": self.replica_id, "pid": os.getpid()}
        )
        while True:
            try:
                await self._redis.set(key, value, ex=TARGET_TTL_S)
            except Exception as err:  # Redis down: Prometheus loses this target until it is back
                logger.warning("could not register metrics target in Redis: %s", err)
            await asyncio.sleep(TARGET_REFRESH_S)

    async def handle(self, request: ForwardedRequest) -> ForwardedResponse:
        """Answer one HTTP request forwarded by the gateway."""
        response = await call_asgi(self.app, request)
        response.headers.append((b"x-gga-replica", self.replica_id.encode()))
        return response

    async def check_health(self) -> None:
        """Ray's health probe: fail when the models are not ready (Ray then replaces us)."""
        if not self.app.state.registry.ready:
            raise RuntimeError("models are not ready")

    async def __del__(self) -> None:
        """Graceful shutdown: stop accepting, drain the queues, close the store.

        Also called for a replica stopped while its ``__init__`` was still running, so every
        attribute may be missing.
        """
        task = getattr(self, "_register_task", None)
        if task is not None:
            task.cancel()
        client = getattr(self, "_redis", None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.delete(targets_key(self.settings.redis_prefix, self.replica_id))
                await client.aclose()
        server = getattr(self, "metrics_server", None)
        if server is not None:
            with contextlib.suppress(Exception):
                server.shutdown()
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)


def _node_ip() -> str:
    """The address other nodes (and Prometheus) reach this replica at."""
    import ray

    return ray.util.get_node_ip_address()
