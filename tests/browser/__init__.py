"""Driving Debian's Chromium with Playwright (no downloaded browser builds).

``browser_context(tmp)`` launches ``/usr/bin/chromium`` (``$CHATAUTH_CHROMIUM``
overrides it) headless with a fresh profile directory.  ``require_chromium()``
skips a test where Chromium or Playwright is missing, and fails it instead when
``CHATAUTH_REQUIRE_SERVICES=1`` (CI installs Chromium in ``.ci/run``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_SERVICES

CHROMIUM = os.environ.get("CHATAUTH_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Records every ``chatauth:state`` event of the widget with the page's clock.
STATE_RECORDER = """
window.__chatauth = [];
document.addEventListener("chatauth:state", function (e) {
  window.__chatauth.push({at: performance.now(), state: e.detail.state,
    message: e.detail.message, sessionId: e.detail.sessionId,
    timings: Object.assign({}, e.detail.timings)});
});
"""


def require_chromium() -> None:
    problem = None
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install playwright)"
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(problem + " and CHATAUTH_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(problem)


@contextmanager
def browser_context(tmp: Path, **options: Any) -> Iterator[Any]:
    """A Playwright ``BrowserContext`` of a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            **options,
        )
        try:
            yield context
        finally:
            context.close()


def states(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("window.__chatauth")


def wait_for_state(
    page: Any, state: str, *, count: int = 1, timeout: float = 10
) -> dict:
    """Wait until the widget has entered ``state`` ``count`` times; the last entry."""
    page.wait_for_function(
        "([s, n]) => window.__chatauth.filter(e => e.state === s).length >= n",
        arg=[state, count],
        timeout=timeout * 1000,
    )
    return [e for e in states(page) if e["state"] == state][count - 1]
