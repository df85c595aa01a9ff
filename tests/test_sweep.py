"""Sweeps (`python -m zoo -m ...`): one folder per job, failed jobs recorded without stopping the others, the summary
files and plots, each launcher, the summary rebuilt from a folder, and the cache jobs of one process share."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.checkpoint.lazy import InMemory
from zoo.config import job_dirname
from zoo.jobcache import JobCache, checkpoint_key, gate_key

from conftest import ROOT, compose_cfg

pytestmark = pytest.mark.slow  # multirun sweeps

SMALL = [
    "model=smollm2_135m",
    "variant=small",
    "export.prefill_lens=[8]",
    "export.check_steps=4",
    "golden.answer_tokens=8",
]  # the small variant's longest golden prompt (33) + 8 tokens fit kv 48, not kv 32
PNG = b"\x89PNG\r\n\x1a\n"


def sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    home = tmp_path / "home"  # TF/Keras write ~/.keras: keep HOME out of the folders under test
    home.mkdir(exist_ok=True)
    out = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "zoo", "-m", *SMALL, *overrides, f"hydra.sweep.dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    return done, out


def summary_rows(sweep_dir: Path) -> dict[tuple[str, int], dict]:
    with open(sweep_dir / "summary.csv") as f:
        return {(r["quant"], int(r["kv_cache_max"])): r for r in csv.DictReader(f)}


def reports(sweep_dir: Path) -> dict[tuple[str, int], dict]:
    out = {}
    for path in sweep_dir.glob("*/report.json"):
        report = json.loads(path.read_text())
        config = json.loads(json.dumps(report.get("config", {})))
        out[(config["quant"]["name"], config["export"]["kv_cache_max"])] = report
    return out


def test_basic_sweep_records_failed_jobs_and_writes_summary(tmp_path):
    """2x2 in one process with the bench stage; int8 jobs fail their check on purpose (a KL bound nothing meets)."""
    done, out = sweep(
        tmp_path,
        "quant=none,int8_dynamic",
        "export.kv_cache_max=48,64",
        "quant.check.max_kl=1e-9",
        "bench.enabled=true",
        "bench.warmup=1",
        "bench.repeats=2",
        "bench.decode_steps=4",
        "bench.bandwidth_mib=8",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(jobs) == 4 and not any(c in name for name in jobs for c in "[]/ *?")
    assert all(name.startswith("bench.bandwidth_mib=8,") for name in jobs)  # long: cut, ended by a hash

    rows = summary_rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        ("none", 48): "ok",
        ("none", 64): "ok",
        ("int8_dynamic", 48): "failed",
        ("int8_dynamic", 64): "failed",
    }
    for kv in (48, 64):
        assert "CheckFailed" in rows[("int8_dynamic", kv)]["error"] and "kl" in rows[("int8_dynamic", kv)]["error"]
        assert float(rows[("int8_dynamic", kv)]["size_mb"]) > 0  # exported before its check failed
        assert rows[("int8_dynamic", kv)]["decode_tok_s"] == ""  # no bench after a failed check
        assert float(rows[("none", kv)]["decode_tok_s"]) > 0 and float(rows[("none", kv)]["convert_s"]) > 0
    md = (out / "summary.md").read_text()
    assert "4 jobs, 2 ok, 2 failed" in md and md.count("| ok |") == 2 and "## Failed jobs" in md
    assert "| quant=none export.kv_cache_max=48 | ok |" in md  # only the overrides that tell jobs apart
    for plot in ("decode_tok_s.png", "size_mb.png"):
        assert (out / plot).read_bytes()[:8] == PNG

    # one process: the int8 jobs (after the none jobs) reuse the checkpoint and the gate of the same kv size
    by_job = reports(out)
    assert by_job[("none", 48)]["reused"] == []
    for kv in (48, 64):
        assert by_job[("int8_dynamic", kv)]["reused"] == ["checkpoint", "gate"]
        assert by_job[("int8_dynamic", kv)]["golden"] == by_job[("none", kv)]["golden"]

    # the same summary from the folder alone
    callback_csv = (out / "summary.csv").read_text()
    for name in ("summary.csv", "summary.md", "decode_tok_s.png", "size_mb.png"):
        (out / name).unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "zoo.summary", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (out / "summary.csv").read_text() == callback_csv
    assert (out / "summary.md").read_text() == md and (out / "size_mb.png").exists()


@pytest.mark.parametrize("launcher", ["zoo_joblib", "zoo_local"])
def test_sweep_in_separate_processes(launcher, tmp_path):
    """2x2 through joblib workers / submitit's local executor, golden gate only; the kv 32 jobs fail (too small)."""
    done, out = sweep(
        tmp_path,
        f"hydra/launcher={launcher}",
        "quant=none,int8_dynamic",
        "export.kv_cache_max=32,48",
        "export.enabled=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = summary_rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        ("none", 32): "failed",
        ("int8_dynamic", 32): "failed",
        ("none", 48): "ok",
        ("int8_dynamic", 48): "ok",
    }
    assert "GateFailed" in rows[("none", 32)]["error"] and "kv_cache_max=32" in rows[("none", 32)]["error"]
    assert float(rows[("none", 48)]["golden_max_abs_diff"]) <= 1e-4
    assert "2 ok, 2 failed" in (out / "summary.md").read_text()
    if launcher == "zoo_local":
        assert (out / ".submitit").is_dir()


def test_summary_command_needs_a_sweep_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "zoo.summary", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"zoo.summary: error [input]: {tmp_path}: no sweep jobs here "
        "(no */.hydra/overrides.yaml): give the folder of a `-m` sweep"
    )


def test_job_dirname_is_safe():
    assert (
        job_dirname("export.kv_cache_max=512,export.prefill_lens=[128,512],quant=int8_dynamic")
        == "export.kv_cache_max=512,export.prefill_lens=128-512,quant=int8_dynamic"
    )
    assert job_dirname("model.checkpoint=/data/ckpt*") == "model.checkpoint=_data_ckpt_"
    assert job_dirname("") == "default"
    long = ",".join(f"bench.option_{i}=value_{i}" for i in range(20))
    assert len(job_dirname(long)) == 160 and job_dirname(long) != job_dirname(long + "x")


def test_cache_keys_name_what_a_value_depends_on():
    base = compose_cfg(SMALL)
    assert checkpoint_key(base) == checkpoint_key(compose_cfg([*SMALL, "quant=int8_dynamic", "export.kv_cache_max=96"]))
    assert checkpoint_key(base) != checkpoint_key(compose_cfg([*SMALL, "seed=1"]))
    assert checkpoint_key(base) != checkpoint_key(compose_cfg([*SMALL, "model.arch.norm.eps=1e-6"]))
    assert gate_key(base) == gate_key(compose_cfg([*SMALL, "quant=int8_dynamic", "export.prefill_lens=[16]"]))
    assert gate_key(base) != gate_key(compose_cfg([*SMALL, "export.kv_cache_max=96"]))
    assert gate_key(base) != gate_key(compose_cfg([*SMALL, "golden.atol=1e-3"]))


def test_cache_reuses_and_no_job_changes_what_the_next_reads():
    cfg = compose_cfg(SMALL)
    cache = JobCache()

    class Ckpt:
        tensors = InMemory({"w": torch.ones(3)})

    made = []
    first = cache.checkpoint(cfg, lambda: made.append(1) or Ckpt())
    assert cache.checkpoint(cfg, lambda: made.append(1) or Ckpt()) is first and made == [1]
    assert cache.hits["checkpoint"] == 1
    first.tensors["w"][0] = 2.0  # a job that writes into the weights it read
    assert torch.equal(cache.checkpoint(cfg, Ckpt).tensors["w"], torch.ones(3))

    section = cache.gate(cfg, lambda: {"passed": True, "worst": {"prompt": 0}})
    section["worst"]["prompt"] = 9  # the caller's copy; the cached one stays as stored
    assert cache.gate(cfg, lambda: pytest.fail("gate ran again")) == {"passed": True, "worst": {"prompt": 0}}
