"""A lean HTTP/1.1 keep-alive client for load generation: prebuilt request bytes, no library.

``gga bench overload`` measured seconds of latency that the server never saw: with 256 httpx
clients in one Python process, each request cost the generator a few milliseconds of its own
(building the multipart body, parsing headers into objects), so the whole generator completed
only 60-80 requests a second and every client waited its turn behind the others (docs/
configuration.md). Here each request is bytes built once, sent with one write, and its answer
read with one ``readuntil`` for the head and one ``readexactly`` for the body, so the time a
client measures is the server's, not the generator's.

Only what the service answers is understood: a status line, headers, and a body framed by
``Content-Length`` or chunked; ``Connection: close`` opens a new connection for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """One response: its status and headers (lower-case names)."""

    status: int
    headers: dict[str, str]


def multipart_request(
    host: str, path: str, field: str, filename: str, data: bytes, content_type: str
) -> bytes:
    """The bytes of a ``POST`` of one file as ``multipart/form-data``."""
    boundary = secrets.token_hex(16)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return _request(host, path, f"multipart/form-data; boundary={boundary}", body)


def json_request(host: str, path: str, document: object) -> bytes:
    """The bytes of a ``POST`` of a JSON document."""
    return _request(host, path, "application/json", json.dumps(document).encode())


def _request(host: str, path: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection to ``url``'s host, reopened whenever the server closes it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, request: bytes) -> Answer:
        """Send ``request`` and read its whole answer.

        Raises:
            OSError, asyncio.IncompleteReadError, ValueError: the connection failed or the
                answer was cut short or malformed (the connection is closed; the next call
                opens a new one).
        """
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(request)
            await self._writer.drain()
            answer = await self._read(self._reader)
        except BaseException:
            await self.close()
            raise
        if answer.headers.get("connection", "").lower() == "close":
            await self.close()
        return answer

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Answer:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")  # the empty trailer
        return Answer(status, headers)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # already reset by the server
                await writer.wait_closed()
