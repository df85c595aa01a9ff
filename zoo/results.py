"""What each stage returns: its figures and its timing, as values. report.json is written from these at the end
(zoo/report.py); `sections` gives a result's report.json sections under their fixed names.

A stage that measured but missed its bounds (gate, check, eval, quant=auto) still returns its result, with the
one-line `failure` its caller raises: the report keeps the figures of the miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from zoo.resources import Timing

if TYPE_CHECKING:
    from torch import nn

    from zoo.checkpoint import Checkpoint, Weights
    from zoo.golden import GateResult
    from zoo.kinds.base import ModelKind
    from zoo.schema import ZooConfig


class Result(Protocol):
    def timings(self) -> dict[str, Timing]: ...

    def sections(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Resolved:
    """The `checkpoint` stage: the entry's checkpoint, checked against the architecture the entry states."""

    checkpoint: Checkpoint
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"checkpoint": self.timing}

    def sections(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Loaded:
    """The `build` and `load` stages: our module filled strictly from the checkpoint, and the entry's tokenizer."""

    kind: ModelKind  # resolved once, here, from model.kind: every later stage asks this one
    name: str
    model: nn.Module
    checkpoint: Checkpoint
    tokenizer: object | None
    weights: Weights  # our parameters by name, read from the checkpoint on demand (zoo/checkpoint/mapping.py)
    build: Timing
    load: Timing

    def timings(self) -> dict[str, Timing]:
        return {"build": self.build, "load": self.load}

    def sections(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "checkpoint": self.checkpoint.description,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "streamed": any(p.is_meta for p in self.model.parameters()),
        }


@dataclass(frozen=True)
class Gate:
    """The golden gate: the kind's GateResult (its `to_report()` is report.json's `golden`), `failure` on a miss."""

    result: GateResult
    failure: str | None
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"golden": self.timing}

    def sections(self) -> dict[str, Any]:
        return {"golden": self.result.to_report()}


@dataclass(frozen=True)
class Chosen:
    """`quant=auto`: every candidate tried (`section`, as report.json's `auto`) and the job's config with the
    winner, or `failure` when none meets the bounds."""

    section: dict
    cfg: ZooConfig | None
    failure: str | None
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"auto": self.timing}

    def sections(self) -> dict[str, Any]:
        return {"auto": self.section}


@dataclass(frozen=True)
class Exported:
    """The flatbuffer: where, its size and sha256 (a later edit or truncation shows), its signatures, and what
    converting it took."""

    path: Path
    size_bytes: int
    sha256: str
    signatures: list[str]
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"export": self.timing}

    def sections(self) -> dict[str, Any]:
        return {
            "export": {
                "path": str(self.path),
                "size_bytes": self.size_bytes,
                "sha256": self.sha256,
                "signatures": self.signatures,
                "convert_seconds": self.timing.seconds,
                "convert_peak_rss_bytes": self.timing.peak_rss_bytes,  # see Timing: scope
            }
        }


@dataclass(frozen=True)
class Checked:
    """The post-export check: the kind's metrics over `positions`, the recipe's bounds and what missed them."""

    metrics: dict[str, float]
    positions: int
    bounds: dict[str, float]
    failures: list[str]
    failure: str | None
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"check": self.timing}

    def section(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "positions": self.positions,
            "passed": not self.failures,
            "failures": self.failures,
            "bounds": self.bounds,
        }

    def sections(self) -> dict[str, Any]:
        return {"check": self.section()}


@dataclass(frozen=True)
class Debugged:
    """The divergence finder: report.json's `debug` (first node past the bounds, the node adding most error)."""

    section: dict
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"debug": self.timing}

    def sections(self) -> dict[str, Any]:
        return {"debug": self.section}


@dataclass(frozen=True)
class Evaluated:
    """The eval: the kind's figures on real text (`figures`: what was read, how it was cut), the recipe's
    `quant.eval` bounds and what missed them."""

    figures: dict
    bounds: dict[str, float]
    failures: list[str]
    failure: str | None
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"eval": self.timing}

    def section(self) -> dict[str, Any]:
        return {
            **self.figures,
            "seconds": self.timing.seconds,
            "peak_rss_bytes": self.timing.peak_rss_bytes,
            "bounds": self.bounds,
            "passed": not self.failures,
            "failures": self.failures,
        }

    def sections(self) -> dict[str, Any]:
        return {"eval": self.section()}


@dataclass(frozen=True)
class Bundled:
    """The bundles by kind: each one's path and record (a file's size and sha256, a folder's size)."""

    records: dict[str, dict]
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"bundle": self.timing}

    def sections(self) -> dict[str, Any]:
        return {"bundles": self.records}


@dataclass(frozen=True)
class Benched:
    """The bench's figures (report.json's `bench`) and, for a model and recipe with targets, figure vs target."""

    section: dict
    targets: list[dict] | None
    timing: Timing

    def timings(self) -> dict[str, Timing]:
        return {"bench": self.timing}

    def sections(self) -> dict[str, Any]:
        return {"bench": self.section} | ({"targets": self.targets} if self.targets is not None else {})
