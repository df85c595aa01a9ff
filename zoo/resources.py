"""This process's memory (its peak RSS, a new peak window, freed memory handed back to the kernel) and the timer of a
stage. Leaf modules (the stages, the exporter, the bench's child process) use these without the report, which is
written from what the stages return."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from zoo.progress import stage_ended, stage_started

# Test hook (tests/faults/test_interrupts.py): ZOO_FAULT_AT=<stage>[:<signal>[:<n>]] makes the process send itself
# SIG<signal> (INT by default) as the n-th stage of that name (default the first) starts: an interrupt at an exact
# stage without timing.
FAULT_AT = "ZOO_FAULT_AT"
_stages = logging.getLogger("zoo.stages")  # the job's log file (zoo/quiet.py), line by line as stages run
_started: Counter[str] = Counter()


def peak_rss_bytes() -> int:
    """This address space's high-water mark (VmHWM). Not ru_maxrss: after fork + exec that keeps the parent's peak."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the kernel (glibc's malloc_trim), so memory a
    finished step freed no longer counts as resident when the next one starts."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: freed memory stays with the allocator
        ctypes.CDLL(None).malloc_trim(0)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
LARGE_BLOCK, DYNAMIC_MAX = 128 * 1024, 32 * 1024 * 1024  # glibc's default threshold and its dynamic ceiling


@contextlib.contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """For the block: every allocation of 128 KiB or more gets a mapping of its own, handed back to the kernel when
    freed. By default glibc raises that threshold (up to 32 MiB) each time such a block is freed, and the weight-sized
    arrays of the export that follow are carved from its heaps, whose freed holes stay resident (Gemma-2B int4's
    export peaked 0.3 GiB higher, Mistral-7B int4's 0.7). Not for the whole run: the gate's many small float64
    temporaries, each a mapping of its own, ran 3x slower. After the block the threshold stays at glibc's ceiling."""
    libc = None
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own allocator's policy
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
        libc.mallopt(M_TRIM_THRESHOLD, LARGE_BLOCK)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, DYNAMIC_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, 2 * DYNAMIC_MAX)


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: '5' to /proc/self/clear_refs resets the high-water mark); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Timing:
    """A stage's wall time and peak RSS. `peak_rss_scope`: `stage` where the kernel could reset the high-water mark
    (the stage's own peak), else `process` (the process's peak so far, e.g. earlier jobs of a sweep)."""

    seconds: float
    peak_rss_bytes: int
    peak_rss_scope: str


def interrupt_if_asked(stage: str) -> None:
    spec = os.environ.get(FAULT_AT, "").split(":")
    name, signame, nth = spec + ["INT", "1"][len(spec) - 1 :]
    if name == stage:
        _started[stage] += 1
        if _started[stage] == int(nth):
            os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))


class Stopwatch:
    """What `timed` yields: `timing` is set when the block ends, failed or not."""

    timing: Timing


@contextlib.contextmanager
def timed(stage: str) -> Iterator[Stopwatch]:
    """Time a stage's block (`with timed("export") as clock: ...`, then `clock.timing`). What earlier stages freed is
    released first, so the peak window starts from what is still alive; the run's progress bar (zoo/progress.py)
    shows the stage and ticks once; Ctrl-C inside says which stage it stopped."""
    release_memory()
    scope = "stage" if reset_peak_rss() else "process"
    clock = Stopwatch()
    stage_started(stage)
    _stages.info("%s: started", stage)
    start = time.perf_counter()
    try:
        interrupt_if_asked(stage)
        yield clock
    except KeyboardInterrupt as err:  # report.json says where the run stopped
        err.args = err.args or (f"Ctrl-C in stage {stage}",)
        raise
    finally:
        stage_ended()
        clock.timing = Timing(round(time.perf_counter() - start, 3), peak_rss_bytes(), scope)
        _stages.info("%s: %.1f s, peak RSS %.2f GiB", stage, clock.timing.seconds, clock.timing.peak_rss_bytes / 2**30)
