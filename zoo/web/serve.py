"""A web bundle served on 127.0.0.1: static files with the MIME types the page needs (wasm, JS modules), quiet."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from zoo.errors import BundleError
from zoo.web.files import MANIFEST, TOKENIZER, VENDOR

HOST = "127.0.0.1"


def validate_bundle(folder: Path) -> dict:
    """The bundle's manifest, once every file the page loads is there."""
    if not folder.is_dir():
        raise BundleError(
            f"{folder}: no such folder (a web bundle is written by "
            "`python -m zoo export.bundles=[web]` next to the flatbuffer, as web/)"
        )
    if not (folder / MANIFEST).is_file():
        raise BundleError(f"{folder}: not a web bundle (no {MANIFEST})")
    manifest = json.loads((folder / MANIFEST).read_text())
    needed = [
        manifest["file"],
        f"{TOKENIZER}/tokenizer.json",
        f"{TOKENIZER}/tokenizer_config.json",
        "index.html",
        *VENDOR,
    ]
    if missing := [name for name in needed if not (folder / name).is_file()]:
        raise BundleError(f"{folder}: incomplete web bundle, missing {', '.join(missing)}")
    return manifest


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".json": "application/json",
        ".tflite": "application/octet-stream",
    }

    def log_message(self, format, *args):
        pass


def server(folder: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server of `folder` bound to 127.0.0.1 (port 0: a free one); `serve_forever` or `start` runs it."""
    return ThreadingHTTPServer((HOST, port), partial(Handler, directory=str(folder)))


def start(folder: Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """The server running in a daemon thread, and its URL (for tests and scripts; `shutdown()` stops it)."""
    httpd = server(folder, port)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, url(httpd)


def url(httpd: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{httpd.server_address[1]}/"
