"""Fixtures of the web console tests: Debian's Chromium under Playwright, live servers, artefacts.

No browser is ever downloaded: Playwright drives ``/usr/bin/chromium`` (``apt-get install
chromium``; ``.ci/run`` installs it). Without it the browser tests skip with the reason, except
under ``CI=true``, where a missing browser is a failure.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.support import LiveServer

CHROMIUM = os.environ.get("GGA_TEST_CHROMIUM", "/usr/bin/chromium")
# No sandbox (root in a container), no GPU, and nothing that phones home: the network log of the
# first-load test must only ever show the server under test.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTEFACTS: list[Path] = []


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium shared by a module.

    Module scope, not session: Playwright's sync API keeps an asyncio loop running in this
    thread while it is open, and tests of other modules call ``asyncio.run``.
    """
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        _unavailable(
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GGA_TEST_CHROMIUM)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh tab (own sessionStorage) whose JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(60_000)  # a loaded two-core box; a hung page still fails
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots and measured figures go (``GGA_TEST_ARTEFACTS`` or a temp folder)."""
    folder = Path(os.environ.get("GGA_TEST_ARTEFACTS") or tmp_path_factory.mktemp("console"))
    folder.mkdir(parents=True, exist_ok=True)
    ARTEFACTS.append(folder)
    print(f"console test artefacts: {folder}")
    return folder


def pytest_terminal_summary(terminalreporter) -> None:
    for folder in ARTEFACTS[:1]:
        terminalreporter.write_line(f"web console screenshots and timings: {folder}")


def start_server(model_repo: Path, work: Path, **env: str) -> LiveServer:
    return LiveServer(model_repo, f"sqlite:///{work / 'gga.db'}", work, **env).start()
