"""The body limit inside Ray Serve's HTTP proxy: 413 before a body over ``GGA_MAX_BODY_BYTES``
reaches Ray.

Ray's proxy reads every request body as fast as the client sends it into an unbounded queue,
and the ingress replica's wrapper pulls that queue on its own, so a limit enforced in the
gateway comes after the whole body is held in both processes (a 200 MB chunked body raised the
gateway's peak memory by 40 to 318 MB). This middleware runs in the proxy, in front of that
queue (Ray applies the middlewares an ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` callback
returns around the proxy's ASGI app, outermost; ``ray/serve/_private/http_util.py``,
``configure_http_middlewares`` and ``_apply_middlewares``):

- a declared ``Content-Length`` over the limit is answered 413 before any byte is read;
- a chunked body is read here first, counted chunk by chunk, and answered 413 at the first
  chunk over the limit, without any of it being forwarded; a body within the limit is then
  handed to the proxy whole (it would have queued it whole anyway);
- everything else (a declared length within the limit, bodiless requests, websockets) passes
  through untouched: the HTTP parser never delivers more than the declared length.

The proxy is one of Ray's processes: this module imports no torch and no settings (reading
``Settings`` would import the engine); the driver passes the limit it validated in
``GGA_MAX_BODY_BYTES`` (:func:`proxy_env`).
"""

from __future__ import annotations

import json
import os

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge
from service.protocol.middleware import error_body

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK_PATH = "service.ray_serve.proxy_limit:proxy_middlewares"
LIMIT_ENV = "GGA_MAX_BODY_BYTES"
# The setting's own default and floor (service/settings.py), repeated: importing it here would
# load torch into Ray's proxy.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MIN_MAX_BODY_BYTES = 1024


def proxy_env(max_body_bytes: int) -> dict[str, str]:
    """The environment Ray's proxy needs to install the limit (its actor's ``env_vars``)."""
    return {CALLBACK_ENV: CALLBACK_PATH, LIMIT_ENV: str(max_body_bytes)}


def limit_from_env(environ: dict[str, str] | os._Environ[str] | None = None) -> int:
    """``GGA_MAX_BODY_BYTES`` from the proxy's environment, validated as the settings do.

    Raises:
        ValueError: Not an integer, or below 1024 (Ray then fails to start the proxy, and says
            why in its log, rather than serve without a limit).
    """
    raw = (os.environ if environ is None else environ).get(LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{LIMIT_ENV}={raw!r} is not a whole number of bytes") from None
    if value < MIN_MAX_BODY_BYTES:
        raise ValueError(f"{LIMIT_ENV}={value} is below the floor of {MIN_MAX_BODY_BYTES} bytes")
    return value


def proxy_middlewares() -> list[Middleware]:
    """Ray Serve's proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    return [Middleware(ProxyBodyLimit, max_bytes=limit_from_env())]


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared ``Content-Length`` (None if absent or unreadable) and whether the body is
    sent with ``Transfer-Encoding`` (chunked)."""
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


async def _read_within(receive: Receive, max_bytes: int) -> list[Message] | None:
    """The request's messages up to the end of its body, or None at the first chunk that takes
    the count over ``max_bytes`` (then at most the limit and that chunk have been held)."""
    messages: list[Message] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":  # the client went away: the app hears it
            return messages
        received += len(message.get("body", b""))
        if received > max_bytes:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then the connection's own (disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class ProxyBodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 in Ray's proxy, before Ray reads them.

    Args:
        app: The proxy's ASGI app.
        max_bytes: Largest body forwarded (``GGA_MAX_BODY_BYTES``).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope)
        if declared is not None and declared > self.max_bytes and not chunked:
            await self._refuse(scope, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        messages = await _read_within(receive, self.max_bytes)
        if messages is None:
            await self._refuse(scope, send)
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(error_body(scope["path"], BodyTooLarge(self.max_bytes))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The client may still be sending: the connection is not reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
