"""`python -m zoo` as a user runs it: exit codes, one-line errors, the run directory and nothing else."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


def zoo(*args, cwd):
    home = cwd.parent / "home"  # TF/Keras write ~/.keras: keep HOME out of the directory under test
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)},
    )


@pytest.mark.slow
def test_run_writes_report_and_config_only_into_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    work = tmp_path / "cwd"
    work.mkdir()
    result = zoo(
        "model=tinyllama",
        "variant=small",
        "export.prefill_lens=[16]",
        "export.kv_cache_max=64",
        f"hydra.run.dir={run_dir}",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert "golden PASS" in result.stdout
    library_logs = re.compile(
        r"^([IWE]\d{4} |WARNING: All log messages|INFO: |\[.*\]\[(absl|tensorflow)\])|absl|"
        r"tensorflow|Sanitizing|Assets written",
        re.M,
    )
    assert not library_logs.search(result.stdout + result.stderr), result.stdout + result.stderr  # zoo/quiet.py
    # zoo's own lines only: the stages' verdicts on stdout, the progress bar (tqdm, carriage returns) on stderr
    assert [line.split(" ", 1)[0] for line in result.stdout.splitlines()] == [
        "tinyllama:",
        "golden",
        "export:",
        "check",
        "report:",
    ], result.stdout
    assert all(
        re.fullmatch(r"zoo tinyllama: .*", part.strip()) for part in re.split(r"[\r\n]", result.stderr) if part.strip()
    ), result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("model", "checkpoint", "num_params", "golden", "timings", "versions"):
        assert key in report
    assert report["golden"]["passed"] and report["golden"]["greedy_match"]
    assert report["golden"]["max_abs_diff"] <= 1e-6
    assert {"checkpoint", "build", "load", "golden", "export", "check"} <= set(report["timings"])
    assert "check PASS" in result.stdout and report["check"]["max_abs_diff"] <= 1e-4
    assert (run_dir / "tinyllama_none_kv64.tflite").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["arch"]["dim"] == 64
    assert list(work.iterdir()) == []


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    result = zoo("model.arch.attention.num_kv_heads=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "zoo: error [config]: conf/model/smollm2_135m.yaml: "
        "model.arch.attention.num_kv_heads: 2 does not divide num_heads=9"
    ]
    assert not (tmp_path / "run").exists()


def test_unknown_field_is_one_line(tmp_path):
    result = zoo("model.arch.dimm=3", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "zoo: error [config]: command line override: model.arch.dimm: Key 'dimm' not in 'ArchConfig'"
    )


def test_cfg_job_prints_composed_config(tmp_path):
    result = zoo("--cfg", "job", "model=tinyllama", cwd=tmp_path)
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["model"]["arch"]["num_layers"] == 22
