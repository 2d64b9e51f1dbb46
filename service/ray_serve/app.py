"""The Ray Serve application: ``build_application(settings)``, and ``app_builder`` for config files.

``gga serve --ray`` calls :func:`build_application`; a Ray Serve config file or a KubeRay
``RayService`` names ``service.ray_serve.app:app_builder`` as its ``import_path`` and passes
``GGA_*`` settings through ``runtime_env.env_vars`` (docs/deployment.md).
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve import Application

from service.ray_serve import GATEWAY_DEPLOYMENT, MODEL_DEPLOYMENT
from service.ray_serve.gateway import build_gateway_app
from service.ray_serve.proxy_limit import proxy_env
from service.ray_serve.replica import ModelServer
from service.settings import Settings, get_settings


def replica_env(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of each replica: the driver's ``GGA_*`` variables, with what replicas need.

    Replicas never migrate (the driver did, once) and run torch with the CPUs Ray gives them.
    """
    env = {k: v for k, v in (environ if environ is not None else os.environ).items()
           if k.startswith("GGA_")}  # fmt: skip
    env["GGA_DATABASE_URL"] = settings.database_url
    # The address clients reach (Ray's proxy): repository control in open mode depends on it.
    env["GGA_HOST"] = settings.host
    env["GGA_RUN_MIGRATIONS"] = "false"
    env["GGA_TORCH_THREADS"] = str(max(1, int(settings.ray_replica_cpus)))
    if settings.repo is not None:
        env["GGA_REPO"] = str(settings.repo)
    if settings.models:
        env["GGA_MODELS"] = ",".join(settings.models)
    if settings.redis_url:
        env["GGA_REDIS_URL"] = settings.redis_url
    return env


def controller_options(settings: Settings) -> dict[str, Any]:
    """``serve.start``'s ``controller_options``: the body limit for Ray's HTTP proxies.

    The proxies are actors the Serve controller starts, and they inherit its ``runtime_env``;
    its ``env_vars`` carry the callback that installs the limit in each proxy
    (``proxy_limit.py``) and the limit itself, so it holds on every node without touching the
    nodes' environment. Applied only when this driver starts Serve (a controller already
    running keeps the proxies it has).
    """
    return {"runtime_env": {"env_vars": proxy_env(settings.max_body_bytes)}}


def build_application(settings: Settings, replicas: int | None = None) -> Application:
    """The gateway bound to ``replicas`` model replicas (``settings.ray_replicas`` by default).

    Args:
        settings: The service settings (the driver's).
        replicas: Model replicas; overrides ``settings.ray_replicas``.

    Returns:
        A Ray Serve application, for ``serve.run``.
    """
    env = replica_env(settings)
    n = replicas or settings.ray_replicas
    model = serve.deployment(
        ModelServer,
        name=MODEL_DEPLOYMENT,
        num_replicas=n,
        ray_actor_options={
            "num_cpus": settings.ray_replica_cpus,
            "runtime_env": {"env_vars": env},
        },
        # Our batcher queues and sheds load (503 + Retry-After); Ray must not cap the requests
        # a replica holds below its queue, or batches could never fill.
        max_ongoing_requests=settings.queue_size + settings.max_batch_size,
        graceful_shutdown_timeout_s=settings.shutdown_timeout_s,
        health_check_period_s=5.0,
        health_check_timeout_s=30.0,
    )
    app = build_gateway_app(settings.redis_url, settings.redis_prefix, settings.max_body_bytes)
    gateway = serve.deployment(
        serve.ingress(app)(_Gateway),
        name=GATEWAY_DEPLOYMENT,
        # As many light gateways as model replicas: one gateway must not cap the deployment.
        num_replicas=n,
        ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": env}},
        max_ongoing_requests=4096,
    )
    return gateway.bind(model.bind())


class _Gateway:
    """The ingress deployment's class; its only job is to hold the bound model deployment."""

    def __init__(self, model_server: Any) -> None:
        self.model_server = model_server


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for ``serve run`` and Ray Serve config files (``import_path``).

    Args:
        args: Application arguments; ``replicas`` overrides ``GGA_RAY_REPLICAS``.

    Returns:
        The application, with settings read from ``GGA_*`` environment variables.
    """
    replicas = args.get("replicas")
    return build_application(get_settings(), int(replicas) if replicas else None)
