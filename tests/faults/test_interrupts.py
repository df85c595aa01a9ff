"""Category 5, interruption: Ctrl-C (SIGINT) and SIGKILL at every stage of `python -m zoo`, in the middle of writing
the flatbuffer, and in a multirun sweep. Afterwards no half-written .tflite, .litertlm, report or cache entry exists
under a final name; SIGINT removes the temp files; SIGKILL leaves them recognisable and the next run removes them;
a sweep rerun in the same folder reuses the finished jobs and runs the rest.

The stage-exact signals come from zoo/resources.py's test hook `ZOO_FAULT_AT=<stage>:<signal>[:<n>]`.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from faults.harness import (
    SMALL,
    TEMP_NAMES,
    assert_nothing_partial,
    entry,
    error_of,
    finish,
    generate_args,
    run,
    snapshot,
    start,
    temp_files,
    wait_until,
)
from zoo.files import changed

pytestmark = pytest.mark.slow  # each case a real command in a subprocess

STAGES = ["checkpoint", "build", "load", "golden", "export", "check", "bundle", "bench"]
TFLITE, LITERTLM = "tinyllama_none_kv64.tflite", "tinyllama_none_kv64.litertlm"
BENCH = ["bench.enabled=true", "bench.warmup=1", "bench.repeats=2", "bench.decode_steps=4", "bench.bandwidth_mib=8"]


@pytest.fixture(scope="module")
def every_stage(tiny_tokenizer) -> list[str]:
    """A small run that has all eight stages: a .litertlm bundle (needs a tokenizer, the mask input) and the bench."""
    return [
        "model=tinyllama",
        "variant=small",
        "export=litertlm",
        "export.kv_cache_max=64",
        "export.prefill_lens=[32]",
        f"model.tokenizer.source={tiny_tokenizer}",
        *BENCH,
    ]


def assert_interrupted(result: subprocess.CompletedProcess, sig: str) -> None:
    """SIGINT: exit 130 and the one `interrupted` line; SIGKILL: killed (-9), nothing printed about it."""
    if sig == "INT":
        code, _ = error_of(result)
        assert (result.returncode, code) == (130, "interrupted"), result.stderr
    else:
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert "Traceback" not in result.stderr


def assert_complete_or_absent(run_dir: Path, name: str, before: str, stage: str) -> None:
    """`name` exists exactly when the stage that writes it (`before`) had finished, and is then a whole flatbuffer
    or bundle (as recorded in report.json when there is one)."""
    path = run_dir / name
    assert path.exists() == (STAGES.index(stage) > STAGES.index(before)), sorted(p.name for p in run_dir.iterdir())
    if path.exists():
        data = path.read_bytes()
        assert data[4:8] == b"TFL3" if name.endswith(".tflite") else data[:8] == b"LITERTLM"
        report = run_dir / "report.json"
        if report.exists():
            records = json.loads(report.read_text())
            record = records["export"] if name.endswith(".tflite") else records["bundles"]["litertlm"]
            assert changed(path, record) is None


@pytest.mark.parametrize("sig", ["INT", "KILL"])
@pytest.mark.parametrize("stage", STAGES)
def test_signal_at_each_stage(tmp_path, every_stage, stage, sig):
    run_dir = tmp_path / "run"
    result = run("zoo", *every_stage, f"hydra.run.dir={run_dir}", cwd=tmp_path, ZOO_FAULT_AT=f"{stage}:{sig}")
    assert_interrupted(result, sig)
    assert_nothing_partial(run_dir)
    assert_complete_or_absent(run_dir, TFLITE, "export", stage)
    assert_complete_or_absent(run_dir, LITERTLM, "bundle", stage)
    report = run_dir / "report.json"
    if sig == "INT":  # the report says where it stopped
        data = json.loads(report.read_text())
        assert data["status"] == "interrupted" and stage in data["error"], data.get("error")
    else:
        assert not report.exists()


def export_temps(run_dir: Path) -> list[str]:
    return [p for p in temp_files(run_dir) if TFLITE in Path(p).name]


@pytest.mark.parametrize("sig", ["INT", "KILL"])
def test_signal_while_the_flatbuffer_is_written(tmp_path, sig):
    """The signal arrives once the export's temp files exist. SIGINT removes them; SIGKILL leaves them named as
    temp files (never as the .tflite), and the next run in the folder removes them and finishes."""
    run_dir = tmp_path / "run"
    proc = start("zoo", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    wait_until(lambda: run_dir.is_dir() and export_temps(run_dir), proc, "export temp files")
    proc.send_signal(getattr(signal, f"SIG{sig}"))
    result = finish(proc)
    assert_interrupted(result, sig)
    assert not (run_dir / TFLITE).exists()
    if sig == "INT":
        assert_nothing_partial(run_dir)
        return
    left = export_temps(run_dir)
    assert left and all(TEMP_NAMES.search(Path(p).name) and f"-{proc.pid}" in p for p in left), left
    again = run("zoo", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_nothing_partial(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "ok" and changed(run_dir / TFLITE, report["export"]) is None


def test_generate_killed_while_filling_the_cache(tmp_path, tiny_tokenizer):
    """`zoo.generate` killed while it writes the cache entry's flatbuffer: the entry has temp files and no report
    saying `ok`, so it does not count; the next call removes the dead process's temp files, exports and generates."""
    cache = tmp_path / "artifacts"
    proc = start("zoo.generate", *generate_args(tiny_tokenizer, cache), cwd=tmp_path)
    wait_until(lambda: cache.is_dir() and export_temps(cache), proc, "export temp files in the cache")
    proc.send_signal(signal.SIGKILL)
    assert_interrupted(finish(proc), "KILL")
    assert not (entry(cache) / "report.json").exists() and not (entry(cache) / TFLITE).exists()
    again = run("zoo.generate", *generate_args(tiny_tokenizer, cache), cwd=tmp_path)
    assert again.returncode == 0 and TFLITE in again.stdout, again.stderr
    assert_nothing_partial(cache)
    report = json.loads((entry(cache) / "report.json").read_text())
    assert report["status"] == "ok" and changed(entry(cache) / TFLITE, report["export"]) is None


def sweep(tmp_path: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    return run("zoo", "-m", *SMALL, "export.kv_cache_max=64,80,96", f"hydra.sweep.dir={out}", cwd=tmp_path, **env)


def job_reports(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/report.json"))}


def job_files(out: Path, job: str) -> dict:
    """A job's files but its log, which every run of the sweep appends to."""
    return {k: v for k, v in snapshot(out / job).items() if not k.endswith(".log")}


def test_sweep_interrupted_then_rerun_completes_the_missing_jobs(tmp_path):
    """Three jobs. Ctrl-C as the second job's export starts; then SIGKILL in its check on the first rerun; the second
    rerun reuses job 1 untouched and runs jobs 2 and 3 to the end."""
    out = tmp_path / "sweep"
    kvs = (64, 80, 96)
    jobs = [f"export.kv_cache_max={kv},export.prefill_lens=16,model=tinyllama,variant=small" for kv in kvs]  # Hydra's

    stopped = sweep(tmp_path, out, ZOO_FAULT_AT="export:INT:2")
    assert_interrupted(stopped, "INT")
    assert_nothing_partial(out)
    reports = job_reports(out)
    assert {job: r["status"] for job, r in reports.items()} == {jobs[0]: "ok", jobs[1]: "interrupted"}
    first = job_files(out, jobs[0])

    killed = sweep(tmp_path, out, ZOO_FAULT_AT="check:KILL")  # job 1 reused: the first check is job 2's
    assert_interrupted(killed, "KILL")
    assert f"job reused: {out / jobs[0]}" in killed.stdout
    assert job_reports(out)[jobs[1]]["status"] == "interrupted"  # its new .tflite is not vouched for by a report

    done = sweep(tmp_path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"job reused: {out / jobs[0]}" in done.stdout and f"job reused: {out / jobs[1]}" not in done.stdout
    assert_nothing_partial(out)
    reports = job_reports(out)
    assert {job: r["status"] for job, r in reports.items()} == dict.fromkeys(jobs, "ok")
    for job, kv in zip(jobs, kvs):
        assert changed(out / job / f"tinyllama_none_kv{kv}.tflite", reports[job]["export"]) is None
    assert job_files(out, jobs[0]) == first
    assert "3 jobs, 3 ok" in (out / "summary.md").read_text()
