"""A mid-size entry at full size, as a user runs it: streamed a layer at a time, within the memory budget of its
output file + 3 GiB, gated layer by layer against transformers. The larger entries are benchmarks/full_size.py's
(docs/benchmarks.md), not CI's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a 0.5B-parameter job in a subprocess, ~5 min on 2 cores


def test_mid_size_entry_streams_within_its_budget(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["model=qwen2_5_0_5b", "quant=int8_dynamic", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-m", "zoo", *overrides], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["num_params"] >= 0.49e9 and report["streamed"]
    gate = report["golden"]
    assert gate["passed"] and gate["first_layer_off"] is None
    assert len(gate["layers_max_rel_diff"]) == 24 + 1  # the embeddings, 23 layer outputs, the final norm
    assert max(gate["layers_max_rel_diff"]) <= gate["atol"]
    assert report["check"]["passed"]
    size = report["export"]["size_bytes"]
    peaks = {stage: t["peak_rss_bytes"] for stage, t in report["timings"].items()}
    assert max(peaks.values()) <= size + 3 * 2**30, {k: round(v / 2**30, 2) for k, v in peaks.items()}
    log = (run_dir / "zoo.log").read_text()
    assert "golden: started" in log and "export: started" in log  # stage lines reach the job's log as they run
