"""Fixtures shared by the fault suite (helpers in harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.harness import SMALL, run


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One finished small run (report, config, flatbuffer) that cases copy or point at instead of exporting again."""
    base = tmp_path_factory.mktemp("small_run")
    work = base / "cwd"
    work.mkdir()
    result = run("zoo", *SMALL, f"hydra.run.dir={base / 'run'}", cwd=work)
    assert result.returncode == 0, result.stderr
    return base / "run"


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """tests/small_runtime.py's tiny real tokenizer, for runs that need text (bundles, zoo.generate)."""
    from small_runtime import tiny_tokenizer as make

    return make(tmp_path_factory.mktemp("tokenizer") / "tok")
