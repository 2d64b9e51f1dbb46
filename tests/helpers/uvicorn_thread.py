"""A real uvicorn server for an ASGI app, on loopback in a daemon thread, for as long as needed."""

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from tests.service.support import free_port


@contextlib.contextmanager
def serve_in_thread(app, **config) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL and stops it afterwards.

    Args:
        app: any ASGI application.
        config: more ``uvicorn.Config`` options (``http="httptools"``, ``lifespan="off"``...).
    """
    port = free_port()
    options = {"host": "127.0.0.1", "log_level": "warning", **config}
    server = uvicorn.Server(uvicorn.Config(app, port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
