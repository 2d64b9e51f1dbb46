"""The overload benchmark's lean HTTP client (``gga_lab.bench.raw_http``) against a real uvicorn:
multipart and JSON requests the server parses, bodies framed by length or chunks, a server that
closes the connection, and one that goes away."""

import asyncio
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gga_lab.bench.raw_http import Connection, json_request, multipart_request
from tests.helpers.uvicorn_thread import serve_in_thread
from tests.service.support import free_port


async def _upload(request: Request) -> JSONResponse:
    form = await request.form()
    upload = form["file"]
    return JSONResponse({"name": upload.filename, "size": len(await upload.read())})


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse(await request.json(), status_code=429, headers={"Retry-After": "1"})


async def _chunked(request: Request) -> StreamingResponse:
    async def parts():
        for part in (b"a" * 10, b"b" * 3000, b"c"):
            yield part

    return StreamingResponse(parts(), media_type="text/plain")


async def _close(request: Request) -> JSONResponse:
    return JSONResponse({"bye": True}, status_code=413, headers={"Connection": "close"})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    routes = [
        Route("/upload", _upload, methods=["POST"]),
        Route("/echo", _echo, methods=["POST"]),
        Route("/chunked", _chunked, methods=["POST"]),
        Route("/close", _close, methods=["POST"]),
    ]
    with serve_in_thread(Starlette(routes=routes)) as base:
        yield base


def test_requests_are_parsed_and_answers_read_whole_on_one_connection(url: str) -> None:
    async def run() -> list:
        connection = Connection(url)
        host = connection.authority
        png = bytes(range(256)) * 8
        upload = multipart_request(host, "/upload", "file", "x.png", png, "image/png")
        answers = []
        for request in (
            upload,
            json_request(host, "/echo", {"a": [1, 2]}),
            json_request(host, "/chunked", {}),
            upload,  # after a chunked body, the connection is still in step
        ):
            answers.append(await connection.send(request))
        writer = connection._writer
        await connection.close()
        return answers, writer

    answers, writer = asyncio.run(run())
    assert [a.status for a in answers] == [200, 429, 200, 200]
    assert answers[1].headers["retry-after"] == "1"
    assert answers[0].headers["content-length"] == answers[3].headers["content-length"]
    assert answers[2].headers["transfer-encoding"] == "chunked"
    assert writer is not None  # one connection carried all four


def test_a_closing_server_gets_a_new_connection_and_a_dead_one_an_error(url: str) -> None:
    async def run() -> tuple:
        connection = Connection(url)
        host = connection.authority
        closed = await connection.send(json_request(host, "/close", {}))
        after_close = connection._writer
        again = await connection.send(json_request(host, "/echo", {"b": 1}))
        await connection.close()
        dead = Connection(f"http://127.0.0.1:{free_port()}")  # nothing listens there
        with pytest.raises(OSError):
            await dead.send(json_request(dead.authority, "/echo", {}))
        return closed, after_close, again

    closed, after_close, again = asyncio.run(run())
    assert closed.status == 413 and after_close is None  # closed as the server asked
    assert again.status == 429
