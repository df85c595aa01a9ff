"""Category 6, resources: a model too large for the memory is refused up front, with the estimate and the limit,
before any checkpoint is read (not killed by the OOM killer half way)."""

from __future__ import annotations

import pytest

from faults.harness import assert_user_error, run

pytestmark = pytest.mark.slow  # each case a real command in a subprocess


def test_seven_billion_parameters_do_not_fit_this_machine(tmp_path):
    result = run("zoo", "model=mistral_7b", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    message = assert_user_error(result, "resources", "mistral_7b needs an estimated", "available memory")
    assert "7.2" in message  # billions of parameters, from the entry alone
    assert not (tmp_path / "run").exists()


def test_a_lowered_limit_refuses_the_default_entry(tmp_path):
    result = run("zoo", "memory_limit_gib=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert_user_error(result, "resources", "smollm2_135m needs an estimated 2.", "memory_limit_gib is 1.0 GiB")
    assert not (tmp_path / "run").exists()
