"""``gga serve --ray``: deploy the service on a running Ray cluster and keep it up until stopped.

The driver connects to the cluster (``ray start --head`` on this machine, or ``--ray-address``),
migrates the store once, starts Ray Serve's HTTP proxy on ``--host``/``--port`` and deploys the
application of ``service.ray_serve``; on SIGTERM or Ctrl-C it deletes the application, which
drains every replica (in-flight requests finish, queues drain, stores close).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from service.settings import Settings

logger = logging.getLogger(__name__)


def run_on_ray(settings: Settings, address: str, replicas: int | None) -> int:
    """Deploy and serve until a signal; returns the exit code.

    Args:
        settings: The service settings (the replicas get the same ``GGA_*`` variables).
        address: Ray cluster address (``auto``: the cluster started on this machine).
        replicas: Model replicas (default ``GGA_RAY_REPLICAS``).
    """
    import ray
    from ray import serve
    from ray.serve.config import HTTPOptions

    from service.ray_serve import APP_NAME
    from service.ray_serve.app import build_application, controller_options
    from service.store.migrate import upgrade

    if settings.run_migrations:
        upgrade(settings.database_url)  # once, here; replicas only wait for the schema
    _check_model_control(settings)
    ray.init(address=address, logging_level=logging.WARNING)
    serve_was_running = _serve_running()
    if serve_was_running:
        logger.warning(
            "Ray Serve already runs on this cluster: its HTTP proxy keeps the host, port and body "
            "limit it was started with (--host, --port and GGA_MAX_BODY_BYTES are not applied); "
            "stop it with `serve shutdown`"
        )
    serve.start(
        http_options=HTTPOptions(
            host=settings.host, port=settings.port, keep_alive_timeout_s=int(settings.keep_alive_s)
        ),
        controller_options=controller_options(settings),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    started = time.monotonic()
    serve.run(build_application(settings, replicas), name=APP_NAME, route_prefix="/")
    logger.info(
        "gga-serve on Ray: %d replicas ready in %.0f s at http://%s:%d",
        replicas or settings.ray_replicas,
        time.monotonic() - started,
        settings.host,
        settings.port,
    )
    stop.wait()
    logger.info("stopping: draining every replica")
    serve.delete(APP_NAME)
    if not serve_was_running:
        serve.shutdown()  # the proxy this driver started goes with it
    return 0


def _check_model_control(settings: Settings) -> None:
    """Refuse, before deploying, what every replica would refuse at its start: repository
    control in open mode on an address other machines reach.

    Raises:
        UnsafeModelControl: ``GGA_MODEL_CONTROL=explicit``, no API key, and a non-loopback host.
    """
    from service.access import UnsafeModelControl, is_loopback, open_control_refusal
    from service.auth import Authenticator
    from service.store import Database

    if settings.model_control != "explicit" or is_loopback(settings.host):
        return
    db = Database(settings.database_url)
    try:
        auth = Authenticator(db, settings.api_keys, required=settings.api_keys_required)
        keyed = auth.enabled
    finally:
        db.dispose()
    if not keyed:
        raise UnsafeModelControl(
            "refusing to deploy with GGA_MODEL_CONTROL=explicit and no API key: "
            + open_control_refusal(settings.host)
        )


def _serve_running() -> bool:
    """Whether a Ray Serve controller already runs on the connected cluster."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True
