"""report.json of a run: one section per stage, timings and peak memory per stage, written atomically."""
from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "tensorflow-cpu", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class Report:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"versions": versions(), "cpu_count": os.cpu_count(), "timings": {}}

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.data["timings"][name] = {"seconds": round(time.perf_counter() - start, 3),
                                          "peak_rss_bytes": peak_rss_bytes()}

    def write(self) -> Path:
        write_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")
        return self.path


@contextmanager
def atomic_path(path: Path):
    """A temp file next to `path` to write, renamed to `path` on success and removed on any failure or interrupt:
    an unfinished artifact never looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_atomic(path: Path, data: str | bytes | bytearray | memoryview) -> None:
    with atomic_path(path) as tmp, open(tmp, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
