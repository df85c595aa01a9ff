"""The fault suite's harness: run zoo's real commands as a user does and check what a failure leaves behind.

Every case asserts the contract of zoo/errors.py: exit status 2 for what the user must fix (1 for a bug), exactly one
`<prog>: error [<code>]: ...` line on stderr naming what is wrong, no traceback, and a file system with nothing
half-written under a final name and nothing earlier lost.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.cache import entries

import forked

ROOT = Path(__file__).resolve().parents[2]
# A tiny random model with a short cache: a whole run (gate, export, check) in well under a minute.
SMALL = ["model=tinyllama", "variant=small", "export.kv_cache_max=64", "export.prefill_lens=[16]"]
ERROR_LINE = re.compile(r"^zoo(\.\w+)*: (error|internal error|interrupted) \[(\w+)\]: (.+)$")
# zoo/files.py's `.<name>.zoo-tmp-<pid>`, and the ad-hoc names writers used before it (none may come back)
TEMP_NAMES = re.compile(r"\.zoo-tmp-\d+$|\.tmp$|\.tmp\.|^\.export\.|\.parts$")


def env_for(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)  # TF/Keras write ~/.keras: keep HOME out of the folders under test
    return {
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **extra,
    }


def default_sigint() -> None:
    """The child handles Ctrl-C as in a terminal even when pytest itself was started in the background, where the
    shell ignores SIGINT and that disposition is inherited (Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(module: str, *args: str, cwd: Path, **env: str) -> subprocess.Popen:
    """`python -m <module> <args>` started in the background with stdout and stderr in files (`output` reads
    them), for cases that signal the process while it runs or run two at once."""
    logs = cwd.parent / "logs"
    logs.mkdir(exist_ok=True)
    paths = [logs / f"{len(list(logs.iterdir())) // 2}.{kind}" for kind in ("out", "err")]
    with open(paths[0], "w") as out, open(paths[1], "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            stdout=out,
            stderr=err,
            text=True,
            env=env_for(cwd.parent / "home", **env),
            preexec_fn=default_sigint,
        )
    proc.logs = paths
    return proc


def output(proc: subprocess.Popen) -> tuple[str, str]:
    """What a `start`ed process has printed so far: (stdout, stderr)."""
    return proc.logs[0].read_text(), proc.logs[1].read_text()


def finish(proc: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    """A `start`ed process once it exits, as `run` returns one."""
    proc.wait(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, *output(proc))


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 900) -> None:
    """Poll `condition()` until true; fails if `proc` exits first (with its stderr) or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {output(proc)[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def generate_args(tokenizer: Path, cache: Path) -> list[str]:
    """`python -m zoo.generate` of a tiny model with a real tokenizer, exporting into the artifact cache `cache`."""
    return [
        "model=tinyllama",
        "variant=small",
        "export.kv_cache_max=64",
        "export.prefill_lens=[32]",
        f"model.tokenizer.source={tokenizer}",
        "prompt=Hello",
        "max_new_tokens=4",
        f"cache_dir={cache}",
    ]


def entry(cache: Path) -> Path:
    """The one entry (folder) of an artifact cache."""
    (folder,) = entries(cache)
    return folder


def run(module: str, *args: str, cwd: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from `cwd` with a private HOME next to it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_for(cwd.parent / "home", **env),
        preexec_fn=default_sigint,
        check=False,
    )


def run_warm(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`run` for a command refused before any model work (composition, validation): the same command in a forked
    child of the test process (tests/forked.py), whose imports are already paid, with the same environment."""
    code, out, err = forked.run_module(module, list(args), cwd, env_for(cwd.parent / "home", **env))
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], code, out, err)


def error_of(result: subprocess.CompletedProcess) -> tuple[str, str]:
    """(code, message) of the one error line a failed command printed; fails on a traceback or on other counts."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [m for m in map(ERROR_LINE.match, result.stderr.splitlines()) if m]
    assert len(lines) == 1, result.stderr
    return lines[0].group(3), lines[0].group(4)


def assert_user_error(result: subprocess.CompletedProcess, code: str, *fragments: str) -> str:
    """Exit status 2, one `[code]` line containing every fragment (case-insensitive); returns the message."""
    got_code, message = error_of(result)
    assert (result.returncode, got_code) == (2, code), (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message


def snapshot(*folders: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folders`: path -> (size, sha256)."""
    files = {}
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            files[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def temp_files(*folders: Path) -> list[str]:
    """Files or folders named like an unfinished write (zoo/files.py's temp names)."""
    return [str(p) for folder in folders for p in Path(folder).rglob("*") if TEMP_NAMES.search(p.name)]


def assert_nothing_partial(*folders: Path) -> None:
    assert temp_files(*folders) == []


def user_error_cases(*cases):
    """pytest.param per (id, args, code, fragments) case."""
    return [pytest.param(args, code, fragments, id=case_id) for case_id, args, code, fragments in cases]
