"""The `zoo` console command as a user runs it: its help, version, subcommands and a wrong command."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import COMMANDS, GROUPS

from conftest import ROOT

ZOO = Path(sys.executable).parent / "zoo"  # the console script `pip install` made (pyproject's [project.scripts])


def zoo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert ZOO.is_file(), f"{ZOO} missing: install zoo with pip (pip install -e .)"
    return subprocess.run([str(ZOO), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_every_command_and_every_packaged_option():
    done = zoo("--help")
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert "Hydra" not in done.stdout
    for command in COMMANDS:
        assert f"\n  {command} " in done.stdout, command
    for group in GROUPS:
        for path in (ROOT / "zoo" / "conf" / group).glob("*.yaml"):
            assert f"\n    {path.stem} " in done.stdout, f"{group}={path.stem}"


def test_version_names_zoo_and_the_libraries_its_files_depend_on():
    done = zoo("--version")
    assert done.returncode == 0
    line = done.stdout.strip()
    assert line.startswith(f"zoo {importlib.metadata.version('zoo')} (")
    for name in ("torch", "ai-edge-litert", "ai-edge-quantizer", "transformers"):
        assert f"{name} {importlib.metadata.version(name)}" in line


def test_an_unknown_command_is_one_line_and_exit_2():
    done = zoo("convrt", "model=gemma_2b")
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.strip().splitlines() == [
        "zoo: error [input]: unknown command 'convrt': use one of " + ", ".join(COMMANDS) + " (zoo --help)"
    ]


def test_subcommands_run_their_modules(tmp_path):
    """`zoo convert` is `python -m zoo` (Hydra's config, job name zoo); `zoo generate --help` is zoo.generate's."""
    done = zoo("convert", "quant=int8_dynamic", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "name: smollm2_135m" in done.stdout and "name: int8_dynamic" in done.stdout
    done = zoo("generate", "--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("`python -m zoo.generate")
    assert not list(tmp_path.iterdir())  # printing a config or a help writes nothing


def test_python_m_zoo_help_and_version_are_zoos(tmp_path):
    """`python -m zoo` (= `zoo convert`) answers --help with zoo's text and --version with zoo's versions."""
    run = [sys.executable, "-m", "zoo"]
    done = subprocess.run([*run, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("zoo convert (python -m zoo)") and "Hydra" not in done.stdout
    done = subprocess.run([*run, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(f"zoo {importlib.metadata.version('zoo')} (")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_convert_writes_the_flatbuffer_where_o_says(tmp_path):
    """`zoo convert -o PATH` (= export.output=PATH): the checked file there, its folder made; the report in the
    run folder names it."""
    out = tmp_path / "out" / "small.tflite"
    done = zoo("convert", "variant=small", "-o", str(out), f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["export"]["path"] == str(out) and report["check"]["passed"]
    assert out.stat().st_size == report["export"]["size_bytes"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.tflite"]


def test_readme_and_the_errors_doc_name_every_command():
    readme, errors = (ROOT / "README.md").read_text(), (ROOT / "docs" / "errors.md").read_text()
    for command, (module, _) in COMMANDS.items():
        assert f"zoo {command}" in readme or f"python -m {module}" in readme, command
        assert f"`{module}`" in errors or f"`python -m {module}`" in errors, module


@pytest.mark.slow
def test_debug_writes_where_hydra_run_dir_says(tmp_path):
    """`zoo debug ... hydra.run.dir=DIR` puts its run there, as `zoo convert` does; nothing lands in ./runs."""
    done = zoo("debug", "variant=small", f"hydra.run.dir={tmp_path / 'dbg'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dbg" / "debug.json").is_file() and (tmp_path / "dbg" / "report.json").is_file()
    assert not (tmp_path / "runs").exists()
