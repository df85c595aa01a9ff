"""report.json of a run: one section per stage, timings and peak memory per stage, written atomically at the end.

Every report also states the library versions and the machine (cores, CPU, memory), so a figure can be reproduced
together with the resolved config the pipeline adds.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import OmegaConf

from zoo.files import changed, write_atomic
from zoo.results import Result

if TYPE_CHECKING:
    from zoo.schema import ZooConfig

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


R = TypeVar("R", bound=Result)


class Report:
    """report.json of a run, assembled from what its stages returned (zoo/results.py) and written at the end."""

    def __init__(self, path: Path, cfg: ZooConfig | None = None):
        self.path = path
        self.data: dict[str, Any] = {
            "versions": versions(),
            "cpu_count": os.cpu_count(),
            "machine": machine(),
            "timings": {},
        }
        self.results: dict[type, Result] = {}  # the last result of each stage type, as the stage returned it
        if cfg is not None:
            self.data["variant"] = cfg.variant.value
            self.data["config"] = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def add(self, result: R) -> R:
        """A stage's timings and sections, recorded; `result` passed through."""
        self.data["timings"] |= {name: asdict(timing) for name, timing in result.timings().items()}
        self.data |= result.sections()
        self.results[type(result)] = result
        return result

    def finish(self, error: BaseException | None, reused: list[str] | None = None) -> Path:
        """The status (`ok`, `failed`, or `interrupted` by Ctrl-C) and the error, what the job cache lent, then the
        file, written atomically."""
        stopped = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self.data["status"] = "ok" if error is None else stopped
        if error is not None:
            self.data["error"] = f"{type(error).__name__}: {error}"
        if reused is not None:
            self.data["reused"] = reused
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
