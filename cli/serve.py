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
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # On SIGTERM uvicorn stops accepting, lets in-flight requests finish (up to this long),
        # then the app's shutdown drains the queues and closes the store.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
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
