"""The bench stage on a small variant: every report field is there, positive and consistent (never timing values)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import pipeline
from zoo.bench import target_records
from zoo.schema import BenchTarget, head_dim

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # the bench stage's child runs

BENCH = [
    "model=smollm2_135m",
    "variant=small",
    "export.prefill_lens=[8,16]",
    "export.kv_cache_max=64",
    "export.check_steps=4",
    "bench.enabled=true",
    "bench.warmup=1",
    "bench.repeats=2",
    "bench.decode_steps=4",
    "bench.bandwidth_mib=8",
    "bench.reference=true",
]


def test_bench_stage_fills_its_report_fields(tmp_path):
    cfg = compose_cfg(BENCH)
    report = pipeline.run(cfg, tmp_path).data
    bench, exp = report["bench"], report["export"]
    assert report["status"] == "ok" and "bench" in report["timings"]
    assert set(bench["prefill_tok_s"]) == set(bench["prefill_loop_tok_s"]) == {"8", "16"}
    for t, stats in bench["runtime"]["prefill"].items():
        assert stats["invoke_s"] > 0 and stats["loop_s"] > 0
        assert math.isclose(bench["prefill_tok_s"][t], int(t) / stats["invoke_s"])
        assert math.isclose(bench["prefill_loop_tok_s"][t], int(t) / stats["loop_s"])
    decode = bench["runtime"]["decode"]
    assert decode["start_position"] == 16 and decode["steps"] == 4  # right after the longest prefill
    assert math.isclose(bench["decode_tok_s"], 1 / decode["invoke_s"])
    assert math.isclose(bench["decode_loop_tok_s"], 1 / decode["loop_s"])
    assert math.isclose(bench["decode_loop_over_invoke"], decode["loop_s"] / decode["invoke_s"])
    # our loop's first logits: the shortest prefill (all prompt tokens but the last), then decode of the last
    assert bench["ttft_s"] == bench["runtime"]["prefill"]["8"]["loop_s"] + decode["loop_s"]
    assert 0 < bench["runtime_baseline_rss_bytes"] <= bench["runtime_peak_rss_bytes"]
    layers = cfg.model.arch.num_layers  # q/k/v, o, gate/up, down per layer, and the tied lm_head
    assert bench["ops"]["decode"]["fully_connected"] == 4 * layers + 1, bench["ops"]
    assert set(bench["ops"]) == {"prefill_8", "prefill_16", "decode"}
    assert all(o["total"] > o["fully_connected"] for o in bench["ops"].values())

    # float32: the weights' own bytes are 4 per parameter; the file holds them once plus tables and graph
    assert bench["weight_bytes"] == 4 * report["num_params"]
    assert (
        math.isclose(bench["size_vs_weights"], exp["size_bytes"] / bench["weight_bytes"])
        and bench["size_vs_weights"] > 1
    )
    bw = bench["bandwidth"]
    arch = cfg.model.arch  # float32 K and V per layer: kv_cache_max slots x kv heads x head_dim
    assert bw["read_bytes_per_s"] > 0 and bw["file_bytes"] == exp["size_bytes"]
    assert bw["kv_cache_bytes"] == 2 * 4 * arch.num_layers * 64 * arch.attention.num_kv_heads * head_dim(arch)
    assert math.isclose(bw["bound_tok_s"], bw["read_bytes_per_s"] / exp["size_bytes"])
    assert bw["bound_with_kv_tok_s"] < bw["bound_tok_s"]
    assert math.isclose(bw["decode_fraction_of_bound"], bench["decode_tok_s"] / bw["bound_tok_s"])

    ref = bench["reference"]
    assert set(ref["prefill"]) == {"8", "16"} and ref["decode"]["tok_s"] > 0
    assert math.isclose(bench["speedup_vs_reference"]["decode"], bench["decode_loop_tok_s"] / ref["decode"]["tok_s"])
    assert "targets" not in report  # the targets are the full model's, not the small variant's

    assert report["config"]["bench"]["decode_steps"] == 4 and report["config"]["export"]["prefill_lens"] == [8, 16]
    assert {"torch", "tensorflow-cpu", "ai-edge-litert", "transformers"} <= set(report["versions"])
    assert report["machine"]["cpu_count"] >= 1 and report["timings"]["export"]["peak_rss_bytes"] > 0


def test_target_records_state_figure_target_and_ratio():
    target = BenchTarget(
        model="m",
        quant="q",
        decode_tok_s=88,
        prefill_tok_s=1714,
        prefill_len=128,
        convert_seconds=80,
        convert_peak_rss_gib=2,
        size_vs_weights=1.03,
    )
    report = {
        "export": {"convert_seconds": 40.0, "convert_peak_rss_bytes": 3 * 2**30},
        "bench": {"decode_tok_s": 176.0, "prefill_tok_s": {"64": 900.0}, "size_vs_weights": 1.01},
    }
    records = {r["figure"]: r for r in target_records(report["export"], report["bench"], target)}
    assert records["decode_tok_s"] == {
        "figure": "decode_tok_s",
        "value": 176.0,
        "target": 88,
        "ratio": 2.0,
        "better": "higher",
        "met": True,
    }
    assert records["prefill_tok_s@128"]["value"] is None and records["prefill_tok_s@128"]["met"] is None
    assert records["convert_seconds"]["ratio"] == 0.5 and records["convert_seconds"]["met"]
    assert records["convert_peak_rss_gib"]["ratio"] == 1.5 and not records["convert_peak_rss_gib"]["met"]
    assert records["size_vs_weights"]["ratio"] == pytest.approx(1.01 / 1.03) and records["size_vs_weights"]["met"]


def test_bench_config_is_validated():
    with pytest.raises(
        Exception,
        match=r"bench: warmup \+ decode_steps = 70 decode positions do not fit "
        r"export.kv_cache_max=64",
    ):
        compose_cfg([*BENCH, "bench.decode_steps=69"])


def test_versus_times_a_flatbuffer_in_alternating_rounds(tmp_path):
    """`python -m zoo.versus` on a small export: every round timed by the bench child, from position 0; the table
    and the JSON agree (no llama-bench here: the project neither ships nor builds llama.cpp)."""
    cfg = compose_cfg(BENCH[:5])
    report = pipeline.run(cfg, tmp_path).data
    out = tmp_path / "versus.json"
    argv = [report["export"]["path"], "--rounds", "2", "--prompt", "16", "--gen", "4", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "zoo.versus", *argv], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rounds = result["files"][report["export"]["path"]]["rounds"]
    assert len(rounds) == 2 and all(r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0 for r in rounds)
    assert f"| {Path(report['export']['path']).name} |" in done.stdout
