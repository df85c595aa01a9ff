"""Asymmetric int4 blocks carried by symmetric int4 kernels (zoo/export/asymmetric.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ai_edge_litert.tools import flatbuffer_utils
from test_export import SMALL_EXPORT
from test_export_streamed import CountingWeights
from torch import nn

from zoo import pipeline
from zoo.export.asymmetric import AsymmetricLinear, with_zero_points
from zoo.export.quantize import zero_point_blocks
from zoo.export.weights import state_arrays
from zoo.kinds import kind_of
from zoo.schema import ModeOverride, QuantMode

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # int4 exports

BLOCK = 32


def _q4_1_linear(out_features: int = 48, in_features: int = 4 * BLOCK) -> nn.Linear:
    """A Linear whose weights are GGUF-Q4_1-like: per block, fp16 scale d and min m, levels m + d * q, q in 0..15."""
    g = torch.Generator().manual_seed(0)
    blocks = (out_features, in_features // BLOCK)
    d = (torch.rand(*blocks, 1, generator=g) * 0.02 + 1e-3).half().float()
    m = (-torch.rand(*blocks, 1, generator=g) * 0.1).half().float()
    q = torch.randint(0, 16, (*blocks, BLOCK), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15  # Q4_1 spans its block: the min and the max are levels 0 and 15
    linear = nn.Linear(in_features, out_features)
    linear.weight.data = (m + d * q).reshape(out_features, in_features)
    return linear


def test_exact_on_a_4bit_asymmetric_grid():
    linear = _q4_1_linear()
    asym = AsymmetricLinear(linear, BLOCK)
    x = torch.randn(5, linear.in_features)
    torch.testing.assert_close(asym(x), linear(x), rtol=1e-5, atol=1e-5)
    steps = asym.symmetric.weight.reshape(linear.out_features, -1, BLOCK)
    scale = (steps.amax(-1, keepdim=True) - steps.amin(-1, keepdim=True)) / 15
    levels = steps / scale
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # on the symmetric grid the quantizer recovers
    assert levels.round().min() == -8 and levels.round().max() == 7


def test_any_weights_get_16_levels_per_block():
    """Off-grid weights: an asymmetric block's error is at most half its step, (max - min) / 30."""
    linear = nn.Linear(4 * BLOCK, 16)
    asym = AsymmetricLinear(linear, BLOCK)
    blocks = linear.weight.detach().reshape(16, -1, BLOCK)
    ones = torch.eye(linear.in_features)
    got = (asym(ones) - linear.bias).T.reshape(16, -1, BLOCK)
    bound = (blocks.amax(-1, keepdim=True) - blocks.amin(-1, keepdim=True)) / 30
    assert ((got - blocks).abs() <= bound + 1e-6).all()


def test_outlier_columns_are_exact():
    """A super weight's column leaves the int4 blocks (whose range it no longer stretches) and stays exact, however
    large the activation that meets it."""
    linear = _q4_1_linear()
    w = linear.weight.data
    w[3, 5] = 40 * w.pow(2).mean().sqrt()
    coarse = AsymmetricLinear(linear, 4 * BLOCK)
    split = AsymmetricLinear(linear, 4 * BLOCK, outliers=20)
    assert split.columns == [5] and coarse.columns == []
    x = torch.randn(5, linear.in_features)
    massive = x.clone()
    massive[:, 5] = 3000.0  # the other columns' 128-block error stays, the massive input adds none
    torch.testing.assert_close(split(massive) - linear(massive), split(x) - linear(x), rtol=0, atol=2e-2)
    assert (coarse(massive) - linear(massive)).abs().max() > 10 * (coarse(x) - linear(x)).abs().max()


def test_zero_points_only_where_the_recipe_puts_int4():
    cfg = compose_cfg(["variant=small", "quant=int4_block32", "quant.components.attention=int8_dynamic"])
    model = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint).model
    blocks = zero_point_blocks(model, cfg.quant, kind_of(cfg).components)
    assert blocks and all(".mlp." in name for name in blocks) and set(blocks.values()) == {(BLOCK, 0.0)}
    clone, weights = with_zero_points(model, blocks)
    assert weights is None
    assert isinstance(clone.get_submodule(next(iter(blocks))), AsymmetricLinear)
    assert not any(isinstance(m, AsymmetricLinear) for m in model.modules())  # the verified model is untouched
    assert clone.model.embed_tokens.weight is model.model.embed_tokens.weight  # everything else is shared
    override = ModeOverride("o_proj", QuantMode.int4_block32)
    with_o = zero_point_blocks(model, replace(cfg.quant, overrides=[override]), kind_of(cfg).components)
    assert set(with_o) - set(blocks) == {n for n in with_o if n.endswith("self_attn.o_proj")} != set()


def test_zero_point_weights_are_the_eager_modules_read_once():
    """With a weight source, the asymmetric modules are meta and the source computes both of a Linear's matrices
    from one read of its weight, equal to the eager module's; outlier columns are read up front."""
    cfg = compose_cfg(["variant=small", "quant=int4_block32"])
    model = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint).model
    blocks = {name: (BLOCK, 3.0) for name in zero_point_blocks(model, cfg.quant, kind_of(cfg).components)}
    eager, _ = with_zero_points(model, blocks)
    counting = CountingWeights(state_arrays(model))
    lazy, source = with_zero_points(model, blocks, counting)
    assert set(counting.reads) == {f"{name}.weight" for name in blocks}  # the outlier columns' read
    for name in blocks:
        module = lazy.get_submodule(name)
        assert module.symmetric.weight.is_meta and module.columns == eager.get_submodule(name).columns
    expected = state_arrays(eager)
    for name in [n for n in source if n in expected]:
        assert np.array_equal(source[name], expected[name]), name
    assert {counting.reads[f"{name}.weight"] for name in blocks} == {2}  # the columns' read, one for both matrices


@pytest.mark.parametrize("zero_points, stored", [("none", 0), ("fp16", 1), ("int8_weight_only", 9)])
def test_int4_export_with_zero_points_passes_its_check(zero_points, stored, tmp_path):
    """The shipped int4_block32 recipe end to end: int4 weights, zero-point matrices in `quant.zero_points`
    precision (TensorType FLOAT32 0, FLOAT16 1, INT8 9), check within bounds."""
    cfg = compose_cfg(["quant=int4_block32", f"quant.zero_points={zero_points}", *SMALL_EXPORT])
    assert cfg.quant.zero_point
    report = pipeline.run(cfg, tmp_path)
    assert report["check"]["passed"], report["check"]
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(pipeline.artifact_path(cfg, tmp_path).read_bytes()))
    kinds = {}
    for t in fb.subgraphs[0].tensors:
        if len(t.shape) == 2 and fb.buffers[t.buffer].data is not None:
            kinds.setdefault(".zero_point" in t.name.decode(), set()).add(t.type)
    assert 17 in kinds[False]  # TensorType.INT4: the weights
    assert kinds[True] == {stored}
