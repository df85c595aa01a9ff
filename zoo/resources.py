"""This process's memory: its peak RSS, a new peak window, and freed memory handed back to the kernel. Leaf
modules (the exporter, the bench's child process) use these without the report, which records the stages."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
from pathlib import Path


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


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: '5' to /proc/self/clear_refs resets the high-water mark); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
