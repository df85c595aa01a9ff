"""The run's export and post-export check stages, for every entry in zoo/conf/model/ (small random variants)."""

from __future__ import annotations

import pytest

from zoo import golden, pipeline
from zoo.golden import GateFigures
from zoo.kinds import kind_of
from zoo.kinds.decoder.gate import DecoderGate

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # every entry exported

SMALL_EXPORT = ["variant=small", "export.prefill_lens=[16]", "export.kv_cache_max=64", "export.check_steps=16"]


def test_every_entry_exports_fp32_within_1e4(decoder_entry, tmp_path):
    """Every decoder entry: golden gate, then its flatbuffer matches the PyTorch model to 1e-4 over prefill + 16
    decodes (encoder kinds: tests/test_encdec.py)."""
    cfg = compose_cfg([f"model={decoder_entry}", *SMALL_EXPORT])
    report = pipeline.run(cfg, tmp_path)
    assert report["status"] == "ok"
    assert report["check"]["max_abs_diff"] <= 1e-4, report["check"]
    assert report["check"]["positions"] == 16  # the 7-token prompt does not fill prefill_16: its last slot is padding
    exported = report["export"]
    assert exported["signatures"] == ["prefill_16", "decode"]
    assert exported["size_bytes"] > 4 * report["num_params"] * 0.97
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.json", pipeline.artifact_path(cfg, tmp_path).name]
    )


def test_every_entry_exports_int8_dynamic(decoder_entry, tmp_path):
    """Every entry's int8_dynamic flatbuffer passes the post-export check (the golden gate is test_golden's)."""
    cfg = compose_cfg([f"model={decoder_entry}", *SMALL_EXPORT, "quant=int8_dynamic"])
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    prompt = golden.prompt_ids(cfg.golden, None, cfg.model.arch.vocab_size, cfg.seed, chat=False)[0]
    exported = pipeline.export(cfg, loaded, pipeline.artifact_path(cfg, tmp_path))
    gate = DecoderGate(GateFigures(), (prompt,))  # the check's inputs, without running the gate
    checked = pipeline.check(cfg, loaded, gate, exported.path)
    assert checked.failure is None and checked.metrics["kl"] <= 0.01, checked.metrics


@pytest.mark.parametrize("export", ["litertlm"])
def test_litertlm_layout_exports_and_checks(export, tmp_path):
    """Transposed KV cache with the mask as an input: the layout LiteRT-LM needs."""
    cfg = compose_cfg(["model=smollm2_135m", f"export={export}", *SMALL_EXPORT])
    report = pipeline.run(cfg, tmp_path)
    assert report["check"]["max_abs_diff"] <= 1e-4


def test_check_failure_stops_the_run(tmp_path):
    """A recipe bound the flatbuffer cannot meet fails the run and says by how much."""
    cfg = compose_cfg(["model=tinyllama", *SMALL_EXPORT, "quant.check.max_abs_diff=1e-12"])
    with pytest.raises(pipeline.CheckFailed, match=r"max_abs_diff .* violates bound 1e-12"):
        pipeline.run(cfg, tmp_path)
    assert '"status": "failed"' in (tmp_path / "report.json").read_text()


@pytest.mark.parametrize("recipe", ["fp16", "int8_weight_only", "int4_block32", "int4_block128"])
def test_each_recipe_passes_its_check_on_smollm2(recipe, tmp_path):
    """The remaining recipes through the run's export and check stages on SmolLM2's small variant, each against
    its own bounds."""
    cfg = compose_cfg(["model=smollm2_135m", *SMALL_EXPORT, f"quant={recipe}"])
    report = pipeline.run(cfg, tmp_path)
    assert report["status"] == "ok" and report["check"]["passed"], report["check"]
