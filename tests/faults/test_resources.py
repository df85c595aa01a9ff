"""Category 6, resources: a model too large for the memory is refused up front, with the estimate and the limit,
before any checkpoint is read (not killed by the OOM killer half way)."""

from __future__ import annotations

import pytest

from faults.harness import assert_user_error, run

pytestmark = pytest.mark.slow  # each case a real command in a subprocess


def test_seven_billion_parameters_streamed_do_not_fit_a_lowered_limit(tmp_path):
    """Mistral-7B streams (one layer at a time, zoo/stream.py): its estimate is the int8 file plus the libraries,
    ~10 GiB, not its 29 GB of float32; below that it is refused with the estimate."""
    overrides = ("model=mistral_7b", "quant=int8_dynamic", "memory_limit_gib=6")
    result = run("zoo", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    message = assert_user_error(result, "resources", "mistral_7b needs ~", "memory_limit_gib is 6.0 GiB")
    assert "7.2" in message and "streamed" in message  # billions of parameters, from the entry alone
    assert not (tmp_path / "run").exists()


def test_a_lowered_limit_refuses_the_default_entry(tmp_path):
    result = run("zoo", "memory_limit_gib=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert_user_error(result, "resources", "smollm2_135m needs ~3.", "memory_limit_gib is 1.0 GiB")
    assert not (tmp_path / "run").exists()
