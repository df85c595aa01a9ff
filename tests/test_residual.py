"""The residual stream rotated offline (zoo/export/residual.py): the same logits, fewer online rotations."""

from __future__ import annotations

import pytest
import torch

from zoo import pipeline
from zoo.errors import ConfigError
from zoo.export.private import schema
from zoo.export.recipe import check_recipe
from zoo.export.residual import block_size, rotated, unrotatable
from zoo.kinds import kind_of
from zoo.schema import QuantConfig

from conftest import compose_cfg

ROTATE = ["quant=int8_dynamic", "quant.rotate_residual=true"]


def _small(entry: str):
    cfg = compose_cfg([f"model={entry}", "variant=small", *ROTATE])
    return cfg, pipeline.load_model(cfg, pipeline.resolve_checkpoint(cfg).checkpoint).model


@pytest.mark.parametrize("entry", ["smollm2_135m", "tinyllama", "qwen3_0_6b", "gemma_2b", "phi3_5_mini"])
def test_rotated_model_computes_the_same_logits(entry):
    """Tied (SmolLM2, Gemma: zero-centred gammas, scaled embeddings) and untied (TinyLlama, Phi-3.5) tables, q/k
    norms (Qwen3): the rotated copy gives the original's logits to float32 rounding, and the original is untouched."""
    cfg, model = _small(entry)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    copy, applied = rotated(model, cfg.quant)
    assert applied.rotate_residual and copy is not model
    tokens = torch.randint(cfg.model.arch.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, _ = model(tokens, torch.arange(12), model.empty_cache(32))
        got, _ = copy(tokens, torch.arange(12), copy.empty_cache(32))
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (got - want).abs().max()
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    norm = copy.model.layers[0].input_layernorm
    assert torch.equal(norm.weight, torch.full_like(norm.weight, 0.0 if norm.zero_centered else 1.0))  # folded
    assert (copy.model.norm.rotation_in is not None) == (copy.lm_head is None)  # a tied table keeps gamma online


@pytest.mark.parametrize("entry, why", [("gpt2", "LayerNorm"), ("gemma2_2b", "post-norms"), ("phi_2", "LayerNorm")])
def test_other_architectures_keep_their_online_rotations(entry, why):
    cfg, model = _small(entry)
    assert why in unrotatable(model)
    same, applied = rotated(model, cfg.quant)
    assert same is model and not applied.rotate_residual  # the `hadamard` list then applies in full


def test_zero_points_and_a_rotated_stream_are_refused():
    cfg = compose_cfg(["quant=int4_block32", "quant.rotate_residual=true"])
    kind = kind_of(cfg)
    with torch.device("meta"):
        model = kind.build(cfg.model.arch, cfg.export)
    with pytest.raises(ConfigError, match="rotate_residual moves int4 weights off their zero-point grid"):
        check_recipe(cfg.quant, kind.components, model, cfg.model.name)


def test_block_size():
    assert block_size(576, 512) == 64 and block_size(2048, 512) == 512 and block_size(2048, 0) == 2048
    assert block_size(3072, 64) == 64 and block_size(96, QuantConfig().hadamard_max) == 32


def _rotations(path) -> list[str]:
    """Output names of the quantizer's online rotations (`..._rotated`), over every signature."""
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    names = []
    for g in (model.Subgraphs(i) for i in range(model.SubgraphsLength())):
        ops = (g.Operators(j) for j in range(g.OperatorsLength()))
        names += [g.Tensors(op.Outputs(0)).Name().decode() for op in ops]
    return [n for n in names if n.endswith("_rotated")]


@pytest.mark.slow
def test_rotated_int8_export_drops_the_readers_rotations(tmp_path):
    """SmolLM2's small variant in int8_dynamic with the stream rotated: the check passes; the online rotations of
    the norms' outputs (q/k/v and gate/up inputs) are gone, down_proj's input (the MLP's hidden units) keeps its."""
    small = ["variant=small", "export.prefill_lens=[16]", "export.kv_cache_max=64"]
    rotations = {}
    for name, cfg in (
        ("plain", compose_cfg([*small, "quant=int8_dynamic"])),
        ("rotated", compose_cfg([*small, *ROTATE])),
    ):
        report = pipeline.run(cfg, tmp_path / name)
        assert report["status"] == "ok" and report["check"]["passed"], report["check"]
        rotations[name] = _rotations(pipeline.artifact_path(cfg, tmp_path / name))
    assert any("layernorm" in n for n in rotations["plain"])
    assert not any("layernorm" in n for n in rotations["rotated"]), rotations["rotated"]
    assert any("mlp" in n for n in rotations["rotated"])
