"""The finder as a stage: tables printed, debug.json written, report.json's `debug` section returned."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from zoo.debug.blame import blame, blame_table
from zoo.debug.explorer import write_overlays
from zoo.debug.finder import find, table, write_json
from zoo.kinds.base import ModelKind
from zoo.schema import ZooConfig


def run_finder(
    cfg: ZooConfig, kind: ModelKind, model: nn.Module, inputs: list[list[int]], path: Path, run_dir: Path
) -> dict:
    """Every signature call of the kind's debug programs on the first golden input; blame for the top suspects
    when the recipe quantizes (`debug.blame`); Model Explorer overlays of both graphs in `run_dir/explorer/`."""
    programs = kind.debug_programs(model, inputs, cfg)
    finding = find(path, programs, cfg.quant.check, cfg.threads)
    print(table(finding, cfg.debug.top), flush=True)
    rows = blame(cfg, model, programs, path, finding, kind) if cfg.debug.blame else []
    if rows:
        print(blame_table(rows), flush=True)
    overlays = write_overlays(finding, programs, path, run_dir / "explorer")
    explorer = {
        "models": [str(m) for m in overlays.models],
        "node_data": [str(d) for d, _ in overlays.node_data],
        "url": overlays.url(cfg.debug.port),
    }
    write_json(finding, run_dir / "debug.json", {"blame": rows, "explorer": explorer})
    culprit = rows[0]["op"] if rows and rows[0]["share"] > 0 else None  # blame's rows come largest share first
    return {
        **finding.section(),
        "blame": rows,
        "culprit": culprit,
        "path": str(run_dir / "debug.json"),
        "explorer": explorer,
    }
