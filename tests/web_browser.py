"""Debian's Chromium driven by Playwright for the web bundle's tests: no browser download, no network but 127.0.0.1.

A missing browser fails the test (setup.sh --with-web installs it), it never skips."""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from zoo.web.serve import start

# as root Chromium needs --no-sandbox; without the background-networking flags it stalls on a closed network
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
LOAD_TIMEOUT_MS = 600_000


def chromium_path() -> str:
    path = shutil.which("chromium")
    assert path, "chromium is not installed: ./setup.sh --with-web installs it (apt-get install chromium)"
    return path


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="zoo-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), args=ARGS, viewport={"width": 900, "height": 700}
        )
        try:
            yield context
        finally:
            context.close()


@contextlib.contextmanager
def bundle_page(context, folder: Path, query: str = ""):
    """The bundle served on 127.0.0.1 and open in a page, once `window.zoo` is ready; `page.foreign` lists every
    request that left the server, `page.errors` the page's uncaught errors."""
    httpd, url = start(folder)
    page = context.new_page()
    page.foreign, page.errors = [], []
    page.on("request", lambda r: None if r.url.startswith(url) else page.foreign.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    try:
        page.goto(url + query)
        page.wait_for_function(
            "window.zoo !== undefined || document.getElementById('status').className === 'error'",
            timeout=LOAD_TIMEOUT_MS,
        )
        assert page.evaluate("window.zoo !== undefined"), page.inner_text("#status")
        yield page
    finally:
        page.close()
        httpd.shutdown()
        httpd.server_close()


def floats(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), np.float32)
