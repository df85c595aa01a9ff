"""The export of a model whose parameters are on the meta device, its weights read one at a time from a source
(zoo/export/weights.py): the same file as the export of the float model in memory, each weight read once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping

import numpy as np
import pytest
import torch

from zoo.export import private
from zoo.export.weights import ModuleWeights, state_arrays, traceable
from zoo.kinds import kind_of

from conftest import compose_cfg

SMALL = ["variant=small", "export.prefill_lens=[16]", "export.kv_cache_max=64"]


class CountingWeights(Mapping[str, np.ndarray]):
    """A weight source over arrays that counts the reads of each name and returns a fresh copy each time."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        self._weights, self.reads = weights, {}

    def __getitem__(self, name: str) -> np.ndarray:
        self.reads[name] = self.reads.get(name, 0) + 1
        return np.array(self._weights[name], copy=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, name: object) -> bool:  # without a read
        return name in self._weights


def _models(overrides: list[str]):
    """The config, a float model with seeded random weights, the same model with meta parameters, and its weights
    (parameters only: buffers such as RoPE tables stay real in the meta model)."""
    cfg = compose_cfg([*SMALL, *overrides])
    kind = kind_of(cfg)
    torch.manual_seed(0)
    model = kind.build(cfg.model.arch, cfg.export)
    with torch.device("meta"):
        meta = kind.build(cfg.model.arch, cfg.export)
    params = {name for name, _ in model.named_parameters()}
    weights = {name: a.copy() for name, a in state_arrays(model).items() if name in params}
    return cfg, kind, model, meta, weights


def _exports(tmp_path, overrides: list[str]) -> tuple[bytes, bytes, dict[str, int], set[str]]:
    cfg, kind, model, meta, weights = _models(overrides)
    kind.export(model, tmp_path / "eager.tflite", cfg)
    counting = CountingWeights(weights)
    kind.export(meta, tmp_path / "streamed.tflite", cfg, counting)
    eager, streamed = (tmp_path / "eager.tflite").read_bytes(), (tmp_path / "streamed.tflite").read_bytes()
    return eager, streamed, counting.reads, set(weights)


@pytest.mark.parametrize("recipe", ["none", "int8_dynamic"])
def test_streamed_export_is_the_eager_file_and_reads_each_weight_once(recipe, tmp_path):
    eager, streamed, reads, names = _exports(tmp_path, [f"quant={recipe}"])
    assert streamed == eager
    assert set(reads) == names and set(reads.values()) == {1}, reads


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe", ["fp16", "int8_weight_only", "int4_block32", "int4_block32_compact", "int4_block32_int4_attention"]
)
def test_streamed_export_of_each_recipe_is_the_eager_file(recipe, tmp_path):
    eager, streamed, reads, names = _exports(tmp_path, [f"quant={recipe}"])
    assert streamed == eager
    assert set(reads) == names and set(reads.values()) == {1}, reads


@pytest.mark.slow
def test_outlier_columns_cost_a_second_read_of_their_weights(tmp_path):
    """int4_block128's outlier columns set the zero-point matrix's width, so those weights are read up front too;
    a low threshold makes this random model have some."""
    eager, streamed, reads, names = _exports(tmp_path, ["quant=int4_block128", "quant.outliers=3"])
    assert streamed == eager
    assert set(reads) == names and set(reads.values()) == {1, 2}, reads
    assert all(".mlp." in name or ".self_attn." in name for name, n in reads.items() if n == 2)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["t5_small", "minilm_l6"])
def test_streamed_export_of_encoder_kinds(entry, tmp_path):
    eager, streamed, reads, names = _exports(tmp_path, [f"model={entry}", "quant=int8_dynamic"])
    assert streamed == eager
    assert set(reads) == names and set(reads.values()) == {1}, reads


def test_module_weights_reads_the_source_and_the_modules_real_buffers():
    _, _, _, meta, weights = _models([])
    source = ModuleWeights(meta, weights)
    name = next(iter(weights))
    assert np.array_equal(source[name], weights[name])
    buffers = dict(meta.named_buffers())
    assert all(np.array_equal(source[b], t.numpy()) for b, t in buffers.items())
    with pytest.raises(KeyError, match="meta"):
        ModuleWeights(meta, {})[name]


def test_traceable_touches_no_weight_memory():
    """The placeholders for meta parameters are uninitialised CPU tensors, restored to meta afterwards."""
    _, _, _, meta, _ = _models([])
    with traceable(meta):
        assert not any(p.is_meta for p in meta.parameters())
    assert all(p.is_meta for p in meta.parameters())


@pytest.mark.parametrize("recipe", ["int8_dynamic", "int4_block32"])
def test_weights_quantized_in_row_blocks_give_the_eager_file(recipe, tmp_path, monkeypatch):
    """The quantizer's parameters computed on blocks of a few rows (private.in_row_blocks: what bounds a 7B export's
    transients to one block) give the eager file, quantized whole, byte for byte: per-channel int8, Hadamard-rotated
    weights and tables (every weight of int8_dynamic), the zero-point recovery of int4 blocks and per-row tables
    alike."""
    rows = Counter()
    blocked = private.in_row_blocks

    def spying(tensor_params):
        def spy(op_info, config, content=None, qsv=None):
            if content is not None:
                rows[(tensor_params.__module__, id(content if content.base is None else content.base))] += 1
            return tensor_params(op_info, config, content, qsv)

        return blocked(spy)

    monkeypatch.setattr(private, "ROW_BLOCK_BYTES", 4096)
    monkeypatch.setattr(private, "in_row_blocks", spying)
    eager, streamed, _, _ = _exports(tmp_path, [f"quant={recipe}"])
    assert streamed == eager
    most = Counter()
    for (module, _), n in rows.items():
        most[module.rsplit(".", 1)[-1]] = max(most[module.rsplit(".", 1)[-1]], n)
    assert max(most.values()) >= 4  # a weight was quantized in blocks of rows
    if recipe == "int8_dynamic":
        assert most["hadamard_rotation"] >= 4  # rotated ones too
