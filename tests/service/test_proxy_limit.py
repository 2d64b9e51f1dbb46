"""The body limit that runs inside Ray Serve's HTTP proxy (service/ray_serve/proxy_limit.py).

Served here by a real uvicorn with the httptools parser, as Ray's proxy serves it, wrapped the
way Ray wraps its proxy app (its own ``_apply_middlewares`` over what the callback returns,
checked by its own validator). The end-to-end check, memory included, is in test_ray.py.
"""

import hashlib
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from service.errors import BodyTooLarge
from service.protocol.middleware import error_body
from service.ray_serve import proxy_limit
from service.ray_serve.proxy_limit import ProxyBodyLimit, limit_from_env, proxy_env
from tests.helpers.uvicorn_thread import serve_in_thread

LIMIT = 1024 * 1024


class _Echo:
    """Stands in for Ray's proxy app: reads the whole body, answers its length and SHA-256."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        body = f"{size} {digest.hexdigest()}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, _Echo]]:
    echo = _Echo()
    app = ProxyBodyLimit(echo, max_bytes=LIMIT)
    with serve_in_thread(app, http="httptools", lifespan="off") as url:
        yield url, echo


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes as a generator: httpx sends it chunked (no Content-Length)."""
    sent = 0
    while sent < total:
        yield bytes([sent % 251]) * min(size, total - sent)
        sent += size


def _refused(r: httpx.Response, path: str) -> None:
    assert r.status_code == 413, r.text[:200]
    assert r.json() == error_body(path, BodyTooLarge(LIMIT))
    assert r.headers["connection"] == "close"


def test_a_declared_length_over_the_limit_is_refused_before_the_app(served) -> None:
    url, echo = served
    before = echo.calls
    r = httpx.post(
        url + "/v1/models/m/predict",
        content=_chunks(50 * LIMIT),
        headers={"content-length": str(50 * LIMIT)},
        timeout=60,
    )
    _refused(r, "/v1/models/m/predict")
    assert echo.calls == before, "the proxy's app saw a request the limit refused"


def test_a_chunked_body_over_the_limit_is_refused_without_reaching_the_app(served) -> None:
    url, echo = served
    before = echo.calls
    for path in ("/v1/models/m/predict", "/v2/models/m/infer"):  # v1 and v2 error bodies
        r = httpx.post(url + path, content=_chunks(50 * LIMIT), timeout=60)
        _refused(r, path)
    assert echo.calls == before, "the proxy's app saw a request the limit refused"


def test_bodies_within_the_limit_reach_the_app_whole(served) -> None:
    url, _echo = served
    for size in (0, 1, LIMIT - 1, LIMIT):
        expected = b"".join(_chunks(size))
        want = f"{size} {hashlib.sha256(expected).hexdigest()}"
        chunked = httpx.post(url + "/v1/x", content=_chunks(size), timeout=30)
        declared = httpx.post(url + "/v1/x", content=expected, timeout=30)
        assert chunked.status_code == declared.status_code == 200
        assert chunked.text == declared.text == want
    assert httpx.get(url + "/v2/health/ready", timeout=10).text.startswith("0 ")


def test_the_limit_comes_from_the_environment_validated() -> None:
    assert limit_from_env({}) == 10 * 1024 * 1024  # the setting's default
    assert limit_from_env({"GGA_MAX_BODY_BYTES": " 2048 "}) == 2048
    with pytest.raises(ValueError, match="GGA_MAX_BODY_BYTES='10MB' is not a whole number"):
        limit_from_env({"GGA_MAX_BODY_BYTES": "10MB"})
    with pytest.raises(ValueError, match="below the floor of 1024"):
        limit_from_env({"GGA_MAX_BODY_BYTES": "10"})
    assert proxy_env(4096) == {
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": proxy_limit.CALLBACK_PATH,
        "GGA_MAX_BODY_BYTES": "4096",
    }


def test_ray_accepts_the_callback_and_wraps_its_proxy_with_it(monkeypatch) -> None:
    """What Ray's proxy does with ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
    (ray/serve/_private/http_util.py: configure_http_middlewares, _apply_middlewares)."""
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from ray.serve._private.http_util import (
        _apply_middlewares,
        validate_http_proxy_callback_return,
    )
    from ray.serve._private.utils import call_function_from_import_path

    monkeypatch.setenv("GGA_MAX_BODY_BYTES", "4096")
    middlewares = validate_http_proxy_callback_return(
        call_function_from_import_path(proxy_limit.CALLBACK_PATH)
    )
    wrapped = _apply_middlewares(_Echo(), middlewares)
    assert isinstance(wrapped, ProxyBodyLimit) and wrapped.max_bytes == 4096  # outermost


def test_gga_serve_ray_gives_the_serve_controller_the_proxy_env(monkeypatch) -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from service.ray_serve.app import controller_options
    from service.settings import Settings

    options = controller_options(Settings(max_body_bytes=123456))
    assert options == {"runtime_env": {"env_vars": proxy_env(123456)}}
    from ray.serve.config import ControllerOptions

    ControllerOptions.model_validate(options)  # what serve.start checks it against


def test_the_proxy_module_stays_light() -> None:
    """Ray's proxy imports it: no torch, no numpy, no settings (which import the engine)."""
    code = (
        "import sys, service.ray_serve.proxy_limit as p; p.proxy_middlewares(); "
        "print(sorted({'torch', 'numpy', 'service.settings'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
