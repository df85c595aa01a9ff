"""Library logs kept out of a command's output: zoo prints its own lines, `verbose=true` shows everything.

TensorFlow, absl, XNNPACK and LiteRT log from C++ straight to file descriptor 2 (INFO lines on every import, conversion
and interpreter), and from Python through absl's logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable

from zoo.errors import ZooError, error_line


def is_verbose() -> bool:
    return bool(os.environ.get("ZOO_VERBOSE"))


def quiet_libraries(verbose: bool) -> None:
    """Set before TensorFlow is imported (its C++ logging reads the environment once)."""
    if verbose:
        os.environ["ZOO_VERBOSE"] = "1"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # the config's searchpath names ./conf for users' own entries: most folders have none, which is fine
    warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=conf is not available")
    quiet_python_logs()


def quiet_python_logs() -> None:
    """Libraries' INFO records (absl, ai-edge-quantizer through the root logger) off the console; again after
    Hydra has configured logging, which resets the root logger's level."""
    if is_verbose():
        return
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("absl", "tensorflow", "jax", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    stages_to_log_file()


def stages_to_log_file() -> None:
    """Each stage's start and end (zoo/resources.py's `zoo.stages` records) into the job's log file that Hydra opened,
    as they happen: a long run shows where it is, and a killed one where it stopped. Not on the console."""
    stages_logger().handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def stages_logger() -> logging.Logger:
    """zoo/resources.py's `zoo.stages` records: INFO and up, to its own handlers only (never the console)."""
    stages = logging.getLogger("zoo.stages")
    stages.setLevel(logging.INFO)
    stages.propagate = False
    return stages


@contextlib.contextmanager
def stages_logged_to(path):
    """The stage lines also into `path` for the block: a pipeline run outside Hydra's job (zoo.generate filling the
    export cache) keeps the same record of where it is as `python -m zoo`'s log."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))  # Hydra's
    stages = stages_logger()
    stages.addHandler(handler)
    try:
        yield
    finally:
        stages.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def native_logs_captured():
    """What native code writes to fd 2 during the block goes to a temp file, shown only if the block fails with
    something other than a user error (a bug's context), or always when verbose."""
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except ZooError:
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def exit_quietly(code: int) -> None:
    """Exit with `code` after our last line: LiteRT's process-wide environment logs its teardown to fd 2 at exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    sys.exit(code)


def verbose_requested(argv: list[str]) -> bool:
    return any(a.lower() in ("verbose=true", "verbose=1", "+verbose=true") for a in argv)


def guarded(prog: str, main: Callable[[], int | None], argv: list[str]) -> int:
    """Run a command's `main`; any failure becomes one line on stderr and an exit status (see error_line)."""
    quiet_libraries(verbose_requested(argv))
    try:
        return main() or 0
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    except BrokenPipeError:  # the reader left (`| head`): nothing more to say, and nothing to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as err:
        line, status = error_line(prog, err)
        if verbose_requested(argv) and status != 130:
            traceback.print_exception(err)
        print(line, file=sys.stderr, flush=True)
        return status
