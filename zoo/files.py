"""How zoo writes files so that an interruption, a full disk or a concurrent run never leaves a half-written file
under a final name: one temp naming scheme, atomic writes, stale-temp cleanup, size/hash records, a lock per entry.

Everything being written lives next to its final path as `.<final name>.zoo-tmp-<pid>` (a file or a folder) and is
renamed into place when complete (atomic on one file system). An exception or Ctrl-C removes it; after SIGKILL it
stays, recognisable by its name, and the next run in that folder removes it once the process that made it is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP = re.compile(r"^\..+\.zoo-tmp-(\d+)$")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.zoo-tmp-{os.getpid()}")


def remove(path: Path) -> None:
    """`path` gone, whether a file, a folder or nothing."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path next to `path` to write (a file, or a folder made by the caller), renamed to `path` on success
    (replacing what was there) and removed on any failure or interrupt: an unfinished artifact never looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            remove(path)  # a folder cannot be renamed over a non-empty one
        os.replace(tmp, path)
    except BaseException as err:
        remove(tmp)
        if isinstance(err, OSError) and err.filename in (None, str(tmp)):  # the error line names the file
            err.filename = str(path)
        raise


@contextlib.contextmanager
def scratch(path: Path) -> Iterator[Path]:
    """A temp folder next to `path` for the intermediate files of making it, always removed afterwards."""
    tmp = temp_path(path.with_name(f"{path.name}.parts"))
    remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        remove(tmp)


def write_atomic(path: Path, data: str | bytes | bytearray | memoryview) -> None:
    with atomic_path(path) as tmp, open(tmp, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)


def remove_stale(folder: Path) -> None:
    """Remove the temp files and folders in `folder` whose process is gone (killed mid-write)."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = TEMP.match(entry.name)
        if match and not alive(int(match.group(1))):
            remove(entry)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def digest(path: Path) -> dict[str, int | str]:
    """The record of a finished file: its size and sha256, kept in report.json to tell it apart from an edit."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
    return {"size_bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def changed(path: Path, record: dict) -> str | None:
    """Why `path` is not the file `record` (digest) describes, or None when it is."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != record.get("size_bytes"):
        return f"{path} is {size} bytes, recorded {record.get('size_bytes')}"
    if record.get("sha256") and digest(path)["sha256"] != record["sha256"]:
        return f"{path} has {size} bytes as recorded but not the recorded sha256"
    return None


@contextlib.contextmanager
def locked(folder: Path, log: Callable[[str], object]) -> Iterator[None]:
    """Hold `folder/.lock` (flock) for writing the entry: a second process writing the same entry waits here, then
    finds it finished. The kernel drops the lock when the holder exits, SIGKILL included."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process writing {folder}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "zoo"
