"""``gga serve``: the REST service (v1 native + v2 Open Inference Protocol) under uvicorn."""

import argparse
import logging
import signal

from service.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve models over HTTP with a trust score on every prediction",
        description="Settings come from GGA_* environment variables and .env; flags win.",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1, GGA_HOST)")
    p.add_argument("--port", type=int, help="port (default 8000, GGA_PORT)")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo, GGA_REPO)")
    p.add_argument("--models", help="comma-separated model names (default: the default model)")
    p.add_argument("--database-url", help="SQLAlchemy URL of the result store")
    p.add_argument(
        "--ray",
        action="store_true",
        help="deploy on a running Ray cluster as a Ray Serve application (needs the [ray] extra)",
    )
    p.add_argument("--replicas", type=int, help="with --ray: model replicas (GGA_RAY_REPLICAS)")
    p.add_argument(
        "--ray-address", default="auto", help="with --ray: the cluster (default: this machine's)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = get_settings(
        host=args.host,
        port=args.port,
        repo=args.repo,
        models=args.models,
        database_url=args.database_url,
    )
    logging.getLogger().setLevel(settings.log_level)
    if args.ray:
        from gga_cli.serve_ray import run_on_ray

        return run_on_ray(settings, args.ray_address, args.replicas)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # On SIGTERM uvicorn stops accepting and lets in-flight requests finish for this long;
        # then the app's shutdown drains what is left of the queues (GGA_SHUTDOWN_TIMEOUT_S in
        # all, which must stay under the orchestrator's grace period, 30 s in compose).
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        # Longer than the idle timeout of the clients and proxies in front (Caddy 30 s here,
        # httpx 5 s, most load balancers 60 s): the client then always closes an idle
        # connection first, and never sends a request on one the server is closing.
        timeout_keep_alive=settings.keep_alive_s,
        # X-Forwarded-For names the caller (its rate limits, logs) only when it comes from a
        # proxy configured in GGA_FORWARDED_ALLOW_IPS; by default no proxy is trusted, so a
        # client cannot pick the address it is limited as.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        access_log=settings.log_level == "DEBUG",
    )
    server = uvicorn.Server(config)
    # uvicorn restores the previous SIGTERM handler after its graceful shutdown and re-raises the
    # signal to it; with the default handler the process would die by SIGTERM instead of
    # exiting 0 after draining. A no-op handler makes "drained and stopped" exit cleanly.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    server.run()
    # uvicorn.Server.run returns normally after a graceful SIGTERM/SIGINT shutdown; a failed
    # startup (a model that does not load) leaves `started` False.
    return 0 if server.started else 1
