"""report.json of a run: one section per stage, timings and peak memory per stage, written atomically.

Every report also states the library versions and the machine (cores, CPU, memory), so a figure can be reproduced
together with the resolved config the pipeline adds.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoo.files import changed, write_atomic
from zoo.resources import peak_rss_bytes, release_memory, reset_peak_rss

# Test hook (tests/faults/test_interrupts.py): ZOO_FAULT_AT=<stage>[:<signal>[:<n>]] makes the process send itself
# SIG<signal> (INT by default) as the n-th stage of that name (default the first) starts: an interrupt at an exact
# stage without timing.
FAULT_AT = "ZOO_FAULT_AT"
_started: Counter[str] = Counter()
PACKAGES = ("torch", "tensorflow-cpu", "ai-edge-litert", "ai-edge-quantizer", "transformers", "numpy", "hydra-core")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict[str, Any]:
    """Cores (all and usable by this process), CPU model and total memory, from /proc where Linux has it."""
    info: dict[str, Any] = {
        "system": platform.system(),
        "arch": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    for path, key, field_name in (("/proc/cpuinfo", "cpu", "model name"), ("/proc/meminfo", "mem", "MemTotal")):
        try:
            line = next(ln for ln in Path(path).read_text().splitlines() if ln.startswith(field_name))
        except (OSError, StopIteration):
            continue
        value = line.split(":", 1)[1].strip()
        if key == "cpu":
            info["cpu_model"] = value
        else:
            info["mem_total_bytes"] = int(value.split()[0]) * 1024
    return info


def interrupt_if_asked(stage: str) -> None:
    spec = os.environ.get(FAULT_AT, "").split(":")
    name, signame, nth = spec + ["INT", "1"][len(spec) - 1 :]
    if name == stage:
        _started[stage] += 1
        if _started[stage] == int(nth):
            os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))


class Report:
    """`bar`: a progress bar (zoo/progress.py) advanced by each stage, closed by `close`."""

    def __init__(self, path: Path, bar=None):
        self.path = path
        self.bar = bar
        self.data: dict[str, Any] = {
            "versions": versions(),
            "cpu_count": os.cpu_count(),
            "machine": machine(),
            "timings": {},
        }

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @contextmanager
    def stage(self, name: str):
        """Time the block; its peak RSS is the stage's own where the kernel can reset the high-water mark
        (`peak_rss_scope: stage`), else the process's peak so far (`process`), e.g. earlier jobs of a sweep. What
        earlier stages freed is released first: the window starts from what is still alive."""
        release_memory()
        scope = "stage" if reset_peak_rss() else "process"
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        start = time.perf_counter()
        try:
            interrupt_if_asked(name)
            yield
        except KeyboardInterrupt as err:  # report.json says where the run stopped
            err.args = err.args or (f"Ctrl-C in stage {name}",)
            raise
        finally:
            if self.bar is not None:
                self.bar.update()
            self.data["timings"][name] = {
                "seconds": round(time.perf_counter() - start, 3),
                "peak_rss_bytes": peak_rss_bytes(),
                "peak_rss_scope": scope,
            }

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def write(self) -> Path:
        write_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")
        return self.path


def unfinished(run_dir: Path, config: dict | None = None) -> str | None:
    """Why `run_dir` does not hold a finished run (of `config`, when given), or None when it does: its report.json
    says `ok` and every file it records (flatbuffer, bundles) still has its recorded size and sha256, so a cache or a
    rerun sweep may use it instead of exporting again."""
    path = run_dir / "report.json"
    if not path.is_file():
        return f"{path} is missing"
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return f"{path} is not valid JSON (truncated or edited)"
    if report.get("status") != "ok":
        return f"{path} says {report.get('status')!r}"
    if config is not None and report.get("config") != json.loads(json.dumps(config, default=str)):
        return f"{path} is of another config"
    records = [report["export"], *report.get("bundles", {}).values()] if "export" in report else []
    return next(filter(None, (changed(run_dir / Path(r["path"]).name, r) for r in records)), None)
