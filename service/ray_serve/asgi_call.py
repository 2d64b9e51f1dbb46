"""One HTTP request through an ASGI app in process, as plain data (what crosses a Ray handle)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message


@dataclass
class ForwardedRequest:
    """An HTTP request as the gateway received it.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: The URL path.
        query_string: The raw query string (bytes after ``?``).
        headers: Raw header pairs, lower-case names.
        body: The whole body.
        client: The client's (host, port) as the gateway saw it.
    """

    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None = None


@dataclass
class ForwardedResponse:
    """The app's answer: status, raw header pairs and the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


async def call_asgi(app: ASGIApp, request: ForwardedRequest) -> ForwardedResponse:
    """Run ``request`` through ``app`` and collect its response.

    Args:
        app: An ASGI application whose lifespan has started.
        request: The request.

    Returns:
        The response; a 500 if the app finished without starting one.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query_string,
        "root_path": "",
        "headers": request.headers,
        "client": request.client,
        "server": ("gga-replica", 80),
        "state": {},
    }
    sent_body = False
    done = asyncio.Event()
    response = ForwardedResponse(status=500)
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await done.wait()  # the client never disconnects mid-request here
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = int(message["status"])
            response.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    response.body = b"".join(chunks)
    return response
