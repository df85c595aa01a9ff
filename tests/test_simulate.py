"""The recipe's rounding simulated on the PyTorch model (zoo/export/simulate.py), the yardstick of the check's KL
bound: it must round as ai-edge-quantizer does, track the real file, and leave a broken file failing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ai_edge_quantizer import qtyping
from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as aeq

from zoo.check import check_failures, kl_bound
from zoo.export.rotation import hadamard
from zoo.export.simulate import Rounding, _rotated, roundings
from zoo.golden import GateFigures
from zoo.kinds import kind_of
from zoo.kinds.decoder.gate import DecoderGate
from zoo.pipeline import check, load_model, resolve_checkpoint
from zoo.schema import QuantCheck, QuantMode

from conftest import compose_cfg


@pytest.mark.parametrize(
    "mode, bits, granularity, block",
    [
        (QuantMode.int8_dynamic, 8, qtyping.QuantGranularity.CHANNELWISE, 0),
        (QuantMode.int4_block32, 4, qtyping.QuantGranularity.BLOCKWISE_32, 32),
        (QuantMode.int4_block128, 4, qtyping.QuantGranularity.BLOCKWISE_128, 128),
    ],
)
def test_weights_round_as_the_quantizer_rounds(mode, bits, granularity, block):
    """Symmetric int8 per channel and int4 blocks (their scales in bfloat16) equal ai-edge-quantizer's own
    quantize-dequantize of the same matrix."""
    w = np.random.default_rng(0).normal(size=(48, 256)).astype(np.float32)
    grouped = w.reshape(48, -1, block) if block else w
    lo, hi = grouped.min(-1, keepdims=not block), grouped.max(-1, keepdims=not block)
    zero, scale = aeq.tensor_zp_scale_from_min_max(lo, hi, bits, True, granularity)
    params = qtyping.UniformQuantParams(
        num_bits=bits,
        quantized_dimension=1 if block else 0,
        scale=scale,
        zero_point=zero,
        symmetric=True,
        block_size=block,
    )
    theirs = aeq.uniform_dequantize(aeq.uniform_quantize(w, params, is_blockwise_quant=bool(block)), params)
    ours = Rounding(mode, 0, None, 0.0).weight(torch.from_numpy(w)).numpy()
    assert np.abs(theirs - w).max() > 1e-3  # the rounding is real
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_zero_point_blocks_sit_on_their_grid():
    """Asymmetric int4 blocks: 16 levels from each block's min to its max, exact on weights already on such a grid
    (SmolLM2's GGUF Q4_1), an outlier column carried exactly; bfloat16 scales move the levels by < 2^-8."""
    rng = np.random.default_rng(1)
    lo, step = rng.normal(size=(8, 4, 1)), rng.uniform(0.01, 0.1, size=(8, 4, 1))
    levels = rng.integers(0, 16, size=(8, 4, 32))
    levels[..., 0], levels[..., 1] = 0, 15
    w = torch.from_numpy((lo + step * levels).reshape(8, 128)).float()  # checkpoints are float32 at most
    rounded = Rounding(QuantMode.int4_block32, 0, QuantMode.none, 0.0).weight(w)
    assert (rounded - w).abs().max() <= 2**-8 * 8 * step.max()
    spiked = w.clone()
    spiked[3, 77] = 50.0
    rounded = Rounding(QuantMode.int4_block32, 0, QuantMode.none, 10.0).weight(spiked)
    assert torch.equal(rounded[:, 77], spiked[:, 77])


def test_rotated_rounding_happens_in_the_hadamard_basis():
    """The rotation is the quantizer's Hadamard matrix in blocks; a rotated weight is rounded after it: one outlier's
    error spreads over its block, and less error remains than rounded in place. Weight and input are both kept in
    the rotated basis, as the file computes: their product is the original basis' product."""
    x = torch.randn(3, 256, dtype=torch.float64)
    h = torch.from_numpy(hadamard(64)).double()  # the quantizer's own matrix
    torch.testing.assert_close(_rotated(x, 64), (x.view(3, 4, 64) @ h).view(3, 256))
    w = torch.randn(16, 64, dtype=torch.float64) * 0.02
    w[:, 5] = 1.0
    plain = Rounding(QuantMode.int8_dynamic, 0, None, 0.0)
    rotated = Rounding(QuantMode.int8_dynamic, 64, None, 0.0)
    assert (rotated.weight(w) - w).pow(2).sum() < (plain.weight(w) - w).pow(2).sum() / 4
    x = torch.randn(3, 64, dtype=torch.float64)
    x[:, 9] = 200.0
    assert (_rotated(rotated.inputs(x), 64) - x).abs().max() < (plain.inputs(x) - x).abs().max()
    product = torch.nn.functional.linear(rotated.inputs(x), rotated.stored(w))
    torch.testing.assert_close(product, torch.nn.functional.linear(_rotated(rotated.inputs(x), 64), rotated.weight(w)))


def test_the_modes_follow_the_recipe():
    """The int4_block32 recipe on SmolLM2's modules: MLP int4 with zero points, attention int8 Hadamard-rotated, the
    tied table int8 per row for the lookup and the lm_head alike."""
    cfg = compose_cfg(["quant=int4_block32", "variant=small"])
    loaded = load_model(cfg, kind_of(cfg), resolve_checkpoint(cfg).checkpoint)
    rounds = roundings(loaded.model, cfg.quant, loaded.kind.components)
    assert rounds["model.layers.0.mlp.down_proj"] == Rounding(
        QuantMode.int4_block32, 0, QuantMode.none, cfg.quant.outliers
    )
    qkv = rounds["model.layers.0.self_attn.qkv_proj"]
    assert qkv.mode is QuantMode.int8_dynamic and qkv.rotation == min(cfg.model.arch.dim, 512)
    assert rounds["model.embed_tokens"].mode is rounds["lm_head"].mode is QuantMode.int8_dynamic


def test_the_kl_bound_scales_with_the_simulation():
    """Three times the simulated KL plus the slack; `max_kl` caps it; a float recipe (nothing simulated) gets the
    slack."""
    bounds = QuantCheck()
    assert kl_bound({"kl": 0.066, "simulated_kl": 0.0663}, bounds) == pytest.approx(0.1990)
    assert kl_bound({"kl": 1e-9}, bounds) == 1e-4
    assert kl_bound({"kl": 0.066, "simulated_kl": 0.0663}, QuantCheck(max_kl=0.05)) == 0.05
    assert check_failures({"kl": 0.21, "simulated_kl": 0.0663}, bounds) == ["kl 0.21 violates bound 0.199"]
    assert check_failures({"kl": 0.00058, "simulated_kl": 2e-6}, bounds) == ["kl 0.00058 violates bound 0.000106"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["int8_dynamic", "int4_block32"])
def test_a_good_file_passes_near_its_simulation_and_a_broken_one_fails(recipe, tmp_path):
    """A small random model's file measures within 2x of its simulated KL (any model, any recipe: 0.8-1.9x) and
    passes; the same export with layer 0's and 1's down_proj swapped (a mapping mistake) fails on KL, its
    simulation unchanged."""
    cfg = compose_cfg([f"quant={recipe}", "variant=small", "export.prefill_lens=[32]", "export.kv_cache_max=64"])
    loaded = load_model(cfg, kind_of(cfg), resolve_checkpoint(cfg).checkpoint)
    gate = DecoderGate(GateFigures(), (loaded.kind.golden_inputs(cfg, loaded.tokenizer)[0],))  # the check's input
    broken = copy.deepcopy(loaded.model)
    with torch.no_grad():
        first, second = (broken.model.layers[i].mlp.down_proj.weight for i in (0, 1))
        saved = first.clone()
        first.copy_(second)
        second.copy_(saved)
    results = {}
    for name, exported in (("good", loaded.model), ("broken", broken)):
        path = tmp_path / f"{name}.tflite"
        loaded.kind.export(exported, path, cfg)
        results[name] = check(cfg, loaded, gate, path)
    good, bad = results["good"], results["broken"]
    assert good.failure is None and 0.5 <= good.metrics["kl"] / good.metrics["simulated_kl"] <= 2, good.metrics
    assert bad.metrics["simulated_kl"] == good.metrics["simulated_kl"]
    assert [f for f in bad.failures if f.startswith("kl ")], bad.metrics
