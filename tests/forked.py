"""`python -m <module>` run in a forked child of the test process: the same code path as the shell's command (runpy,
sys.argv, exit status, stdout and stderr), with torch, TensorFlow and zoo already imported, so a command that ends
before any model work (composition, validation, a refused input) takes a fraction of a second, not a fresh
interpreter's ~10 s of imports."""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import os
import runpy
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from hydra.core.plugins import Plugins

importlib.import_module("zoo.__main__")  # zoo's imports (torch, TF) paid once here: each forked command starts warm
Plugins.instance()  # Hydra's plugin discovery (the launchers) done once, before the forks


class Hung(Exception):
    """The child did not exit within the timeout (it was killed)."""


def fresh_logging() -> None:
    """Logging as a new interpreter has it: no handlers (earlier tests' handlers may hold closed streams, and pytest's
    capture would swallow what the command logs), levels unset; the command configures its own."""
    for logger in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.setLevel(logging.NOTSET)
            logger.disabled = False
    logging.root.setLevel(logging.WARNING)


def forked(fn: Callable[[], None], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300):
    """Run fn() in a forked child in `cwd` (with exactly `env` as its environment when given); its exit status
    (SystemExit's code, 1 on an exception), stdout and stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                fresh_logging()
                os.chdir(cwd)
                if env is not None:
                    os.environ.clear()
                    os.environ.update(env)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
                sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
                fn()
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise Hung(f"no exit within {timeout} s")
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        decode = lambda f: f.read().decode(errors="replace")  # noqa: E731
        return os.waitstatus_to_exitcode(done[1]), decode(out), decode(err)


def run_module(module: str, argv: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300):
    """`python -m module argv` as the shell would run it, in a forked child: (exit status, stdout, stderr)."""

    def go():
        sys.argv = [module, *argv]
        package = importlib.util.find_spec(module).submodule_search_locations is not None
        sys.modules.pop(f"{module}.__main__" if package else module, None)  # executed afresh, imports stay warm
        runpy.run_module(module, run_name="__main__", alter_sys=True)

    return forked(go, cwd, env, timeout)
