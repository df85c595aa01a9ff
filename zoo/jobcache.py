"""What jobs of a sweep run in one process share: the resolved checkpoint and the golden gate's verdict.

A sweep over quant / kv_cache_max / prefill_lens loads the same weights and gates the same model each job; the basic
launcher runs those jobs one after another in one process, so the second job can reuse the first one's work. The
cache is explicit (passed to `pipeline.run`), holds the most recent entry of each kind only (a sweep over models
does not accumulate checkpoints), and its keys name everything a value depends on:
- checkpoint: the `model.checkpoint` string, the file's identity (path, size, mtime) when it is one, the seed (random
  weights), the variant and the entry's transformers class and config;
- golden gate: the checkpoint key plus the gate's inputs (golden config, kv_cache_max, kv_layout, tokenizer, the
  expected answer).
A cached checkpoint hands out a fresh copy of a tensor on every read (zoo/checkpoint/lazy.py), so no job can change
what the next one reads. Jobs in separate processes (joblib, submitit) each start empty.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from zoo.schema import ZooConfig


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(asdict(value) if is_dataclass(value) else value, sort_keys=True, default=str))


def checkpoint_key(cfg: ZooConfig) -> str:
    from zoo.checkpoint.sources import package_file

    source = cfg.model.checkpoint
    identity: Any = None
    path = package_file(source) if source.startswith("package:") else Path(source)
    if source == "random":
        identity = cfg.seed
    elif path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        identity = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return json.dumps(
        {
            "checkpoint": source,
            "identity": identity,
            "variant": cfg.variant.value,
            "reference": _plain(cfg.model.reference),
        },
        sort_keys=True,
        default=str,
    )


def gate_key(cfg: ZooConfig) -> str:
    return json.dumps(
        {
            "checkpoint": checkpoint_key(cfg),
            "golden": _plain(cfg.golden),
            "kv_cache_max": cfg.export.kv_cache_max,
            "kv_layout": cfg.export.kv_layout.value,
            "kv_read_multiple": cfg.export.kv_read_multiple,
            "tokenizer": _plain(cfg.model.tokenizer),
            "expect": cfg.model.expect_answer,
            "mapping": _plain(cfg.model.mapping),
            "arch": _plain(cfg.model.arch),
        },
        sort_keys=True,
    )


class JobCache:
    """The last checkpoint and the gate results by key (copied on the way in and out)."""

    def __init__(self) -> None:
        self._checkpoint: tuple[str, Any] | None = None
        self._gates: dict[str, Any] = {}
        self.hits: dict[str, int] = {"checkpoint": 0, "gate": 0}

    def checkpoint(self, cfg: ZooConfig, make: Callable[[], Any]) -> Any:
        key = checkpoint_key(cfg)
        if self._checkpoint and self._checkpoint[0] == key:
            self.hits["checkpoint"] += 1
            return self._checkpoint[1]
        self._checkpoint = None  # free the old weights before loading new ones
        value = make()
        self._checkpoint = (key, value)
        return value

    def gate(self, cfg: ZooConfig, make: Callable[[], Any]) -> Any:
        """The golden gate's result (the kind's GateResult) for this config; `make` runs the gate (and may raise
        GateFailed)."""
        key = gate_key(cfg)
        if key in self._gates:
            self.hits["gate"] += 1
        else:
            self._gates[key] = copy.deepcopy(make())
        return copy.deepcopy(self._gates[key])
