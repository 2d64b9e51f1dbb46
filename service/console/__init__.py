"""The web console: static HTML, CSS and JavaScript modules served by the app itself.

No build step and no CDN: the files under ``static/`` are the page, shipped in the wheel and
served as they are, so ``gga serve`` shows it on an air-gapped machine. The page talks only to
the public v1 API of the same origin (docs/console.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_URL = "/console"

# The page loads nothing from elsewhere; the policy makes the browser enforce it too. Sign maps
# arrive as base64 PNG (data: URLs) and dropped files are shown from blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/`` and its files under ``/console/``.

    Args:
        app: The service's application.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="console")

    @app.get("/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )
