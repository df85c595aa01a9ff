"""Every recipe in zoo/conf/quant/ on a small tied-embedding Llama-like .tflite with prefill and decode signatures."""

from __future__ import annotations

import dataclasses
import mmap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import torch
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils
from omegaconf import OmegaConf
from tensorflow.compiler.tf2xla.python import xla

from zoo.check import check_failures, logit_metrics
from zoo.config import CONF_DIR
from zoo.errors import ConfigError
from zoo.export.bake import write
from zoo.export.quantize import _plan, quantize
from zoo.export.recipe import validate_recipe
from zoo.kinds import KINDS, kind_of
from zoo.schema import ComponentModes, ModeOverride, QuantCheck, QuantConfig, QuantMode

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # every recipe on an export

RECIPES = sorted((CONF_DIR / "quant").glob("*.yaml"))
VOCAB, DIM, HIDDEN, LAYERS, HEADS, KV_MAX, PREFILL = 1024, 128, 256, 2, 4, 32, 16
HEAD_DIM = DIM // HEADS
_TYPE = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
DECODER = KINDS["decoder"].components  # TinyLlama below names its ops as our decoder does


class TinyLlama(tf.Module):
    """Weights as tf.Variables shared by both signatures; ops named in TF scopes the way the exporter names them."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)

        def weight(*shape, gain=1.0):
            return tf.Variable(rng.normal(0, gain * shape[0] ** -0.5, shape).astype(np.float32))

        # Trained-model-like scales: logits with std ~3 (SmolLM2: 3.4), branches smaller than the residual stream.
        self.embed = weight(VOCAB, DIM, gain=3 * (VOCAB / DIM) ** 0.5)  # tied: also the lm_head matrix
        self.layers = [
            {n: weight(DIM, DIM) for n in ("q_proj", "k_proj", "v_proj")}
            | {
                "o_proj": weight(DIM, DIM, gain=0.25),
                "gate_proj": weight(DIM, HIDDEN),
                "up_proj": weight(DIM, HIDDEN),
                "down_proj": weight(HIDDEN, DIM, gain=0.25),
            }
            for _ in range(LAYERS)
        ]
        angles = np.arange(KV_MAX)[:, None] / 10000 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
        self.rope = tf.Variable(np.concatenate([np.cos(angles), np.sin(angles)], -1).astype(np.float32))

    def forward(self, tokens, input_pos, k_caches, v_caches):
        with tf.name_scope("model.embed_tokens"):
            x = tf.gather(self.embed, tokens[0])
        cos, sin = tf.split(tf.gather(self.rope, input_pos)[:, None], 2, -1)
        mask = tf.where(tf.range(KV_MAX)[None] <= input_pos[:, None], 0.0, -1e9)
        out = {}
        for i, w in enumerate(self.layers):
            with tf.name_scope(f"model.layers.{i}.self_attn"):
                x, out[f"kv_cache_k_{i}"], out[f"kv_cache_v_{i}"] = self._attention(
                    x, w, input_pos, cos, sin, mask, k_caches[i], v_caches[i]
                )
            with tf.name_scope(f"model.layers.{i}.mlp"):
                h = _rms(x)
                x = x + _linear(tf.nn.silu(_linear(h, w, "gate_proj")) * _linear(h, w, "up_proj"), w, "down_proj")
        with tf.name_scope("lm_head"):
            logits = tf.matmul(_rms(x), self.embed, transpose_b=True)
        return {"logits": logits[None], **out}

    def _attention(self, x, w, input_pos, cos, sin, mask, k_cache, v_cache):
        h = _rms(x)
        q, k, v = (tf.reshape(_linear(h, w, n), [-1, HEADS, HEAD_DIM]) for n in ("q_proj", "k_proj", "v_proj"))
        k_cache = xla.dynamic_update_slice(k_cache, _rope(k, cos, sin)[None], [0, input_pos[0], 0, 0])
        v_cache = xla.dynamic_update_slice(v_cache, v[None], [0, input_pos[0], 0, 0])
        scores = tf.einsum("thd,shd->hts", _rope(q, cos, sin), k_cache[0]) * HEAD_DIM**-0.5 + mask
        attn = tf.einsum("hts,shd->thd", tf.nn.softmax(scores), v_cache[0])
        return x + _linear(tf.reshape(attn, [-1, DIM]), w, "o_proj"), k_cache, v_cache


def _linear(x, w, name):
    with tf.name_scope(name):
        return tf.matmul(x, w[name])


def _rms(x):
    return x * tf.math.rsqrt(tf.reduce_mean(x * x, -1, keepdims=True) + 1e-6)


def _rope(x, cos, sin):
    a, b = tf.split(x, 2, -1)
    return tf.concat([a * cos - b * sin, a * sin + b * cos], -1)


def _convert() -> bytes:
    """prefill_{PREFILL} and decode over one float module, weights as constants."""
    module = TinyLlama()
    kv = [
        tf.TensorSpec([1, KV_MAX, HEADS, HEAD_DIM], tf.float32, f"kv_cache_{c}_{i}")
        for c in "kv"
        for i in range(LAYERS)
    ]

    def signature(name, length):
        def fn(tokens, input_pos, *caches):
            return module.forward(tokens, input_pos, caches[:LAYERS], caches[LAYERS:])

        fn.__name__ = name  # the signature key
        specs = [tf.TensorSpec([1, length], tf.int32, "tokens"), tf.TensorSpec([length], tf.int32, "input_pos")]
        return tf.function(fn, input_signature=specs + kv).get_concrete_function()

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [signature(f"prefill_{PREFILL}", PREFILL), signature("decode", 1)], module
    )
    return converter.convert()


def _quantize(float_model: bytes, recipe: QuantConfig) -> bytes:
    return bytes(flatbuffer_utils.convert_object_to_bytearray(quantize(float_model, recipe, DECODER)))


def _logits(model: bytes) -> dict[str, np.ndarray]:
    """Logits of every signature on fixed inputs: prefill from position 0, decode at position PREFILL."""
    interpreter = Interpreter(model_content=bytes(model))
    rng = np.random.default_rng(1)
    out = {}
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)
        length = runner.get_input_details()["tokens"]["shape"][1]
        feeds = {
            "tokens": rng.integers(0, VOCAB, (1, length), dtype=np.int32),
            "input_pos": np.arange(length, dtype=np.int32) + (0 if length > 1 else PREFILL),
        }
        for i in range(LAYERS):
            for c in "kv":
                feeds[f"kv_cache_{c}_{i}"] = rng.normal(0, 1, (1, KV_MAX, HEADS, HEAD_DIM)).astype(np.float32)
        out[name] = runner(**feeds)["logits"]
    return out


def _stack(logits: dict[str, np.ndarray]) -> np.ndarray:
    """All signatures' positions as rows, in a fixed order."""
    return np.concatenate([logits[s].reshape(-1, VOCAB) for s in sorted(logits)])


def _keeps_its_answers(metrics: dict[str, float]) -> bool:
    """A quantized toy model (no PyTorch side to simulate the recipe on, zoo/export/simulate.py) agrees on every
    answer, at a KL far under what any recipe costs a real model (int4_block128 here: 0.0029)."""
    return metrics["top1"] == 1.0 and metrics["kl"] < 0.01


def _recipe(name: str) -> Path:
    return RECIPES[0].with_name(f"{name}.yaml")


def _load(path: Path) -> QuantConfig:
    """The recipe, minus zero points: those come from the PyTorch export (tests/test_asymmetric.py), and this
    TF-built model has none, so its int4 weights take the quantizer's own symmetric scales."""
    recipe = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(QuantConfig), OmegaConf.load(path)))
    recipe.zero_point = False
    return recipe


def _weights(model: bytes) -> dict[str, tuple[str, int]]:
    """Constant tensors of rank >= 2 by name: (dtype, bytes of their buffer)."""
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    return {
        t.name.decode(): (_TYPE[t.type], len(fb.buffers[t.buffer].data))
        for sg in fb.subgraphs
        for t in sg.tensors
        if len(t.shape) >= 2 and fb.buffers[t.buffer].data is not None and len(fb.buffers[t.buffer].data)
    }


def _weight_bytes(model: bytes) -> int:
    """Bytes of all constant buffers, each counted once however many signatures use it."""
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    return sum(len(b.data) for b in fb.buffers if b.data is not None)


@pytest.fixture(scope="module")
def float_model() -> bytes:
    return _convert()


@pytest.fixture(scope="module")
def float_logits(float_model) -> dict[str, np.ndarray]:
    return _logits(float_model)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_within_its_thresholds(path, float_model, float_logits):
    recipe = _load(path)
    model = float_model if recipe.mode is QuantMode.none else _quantize(float_model, recipe)
    logits = _logits(model)
    assert set(logits) == {f"prefill_{PREFILL}", "decode"}
    metrics = logit_metrics(_stack(float_logits), _stack(logits))
    assert _keeps_its_answers(metrics), (recipe.name, metrics)


@pytest.mark.parametrize(
    "name, ratio", [("int8_dynamic", 0.27), ("int8_weight_only", 0.27), ("int4_block32", 0.21), ("int4_block128", 0.17)]
)
def test_weight_bytes_shrink(name, ratio, float_model):
    """Weights are shared by the signatures (one buffer each) and int8 ~1/4, int4 ~1/8 of float plus float16
    block scales; the int4 recipes keep the tied table int8 (28% of this model's weights), int4_block32 attention
    too. Hadamard rotation is off here: its float rotation matrices weigh a lot in a model this small."""
    recipe = _load(_recipe(name))
    recipe.hadamard = []
    model = _quantize(float_model, recipe)
    assert _weight_bytes(model) <= ratio * _weight_bytes(float_model)
    mlp = {dtype for n, (dtype, _) in _weights(model).items() if ".mlp/" in n}
    int4 = recipe.mode in (QuantMode.int4_block32, QuantMode.int4_block128)
    assert mlp == ({"INT4", "FLOAT16"} if int4 else {"INT8"})


def test_spilled_output_is_the_same_model(float_model, tmp_path):
    """The quantizer packing into a file map (the export's memory saving), and the write that drops that map's
    pages as it copies them, give the very file of the in-memory path."""
    recipe = _load(_recipe("int8_dynamic"))
    spilled = quantize(float_model, recipe, DECODER, spill=tmp_path / "spill.tflite")
    views = [getattr(b.data, "base", None) for b in spilled.buffers]
    assert any(isinstance(getattr(v, "obj", None), mmap.mmap) for v in views)  # past the quantizer's small size
    in_memory = quantize(float_model, recipe, DECODER)
    assert write(spilled, tmp_path / "a.tflite").read_bytes() == write(in_memory, tmp_path / "b.tflite").read_bytes()


def test_fp16_halves_the_file(float_model):
    assert len(_quantize(float_model, _load(_recipe("fp16")))) < 0.55 * len(float_model)


def test_component_overrides(float_model):
    components = ComponentModes(
        embedding=QuantMode.int8_dynamic, attention=QuantMode.int8_weight_only, lm_head=QuantMode.none
    )
    recipe = QuantConfig(name="mix", mode=QuantMode.int4_block32, tables=QuantMode.int8_dynamic, components=components)
    model = _quantize(float_model, recipe)
    weights = _weights(model)
    assert {d for n, (d, _) in weights.items() if ".mlp/" in n} == {"INT4", "FLOAT16"}  # values, block scales
    assert {d for n, (d, _) in weights.items() if ".self_attn/" in n} == {"INT8"}
    # The tied table: an int8 copy for the embedding lookup, the float original for the lm_head matmul.
    assert {d for d, size in weights.values() if size >= VOCAB * DIM} == {"INT8", "FLOAT32"}
    assert {d for d, size in weights.values() if size == KV_MAX * HEAD_DIM} == {"INT8"}  # the RoPE table
    assert set(_logits(model)) == {f"prefill_{PREFILL}", "decode"}


def test_tied_table_is_one_buffer(float_model):
    """Same precision for embedding and lm_head: one int8 table serves both ops in both signatures."""
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(_quantize(float_model, _load(_recipe("int8_dynamic")))))
    tables = {t.buffer for sg in fb.subgraphs for t in sg.tensors if list(t.shape) == [VOCAB, DIM]}
    assert len(tables) == 1 and len(fb.buffers[tables.pop()].data) == VOCAB * DIM


def _op_counts(model: bytes, signature: str = "decode") -> Counter:
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in fb.operatorCodes]
    sg = fb.subgraphs[next(s.subgraphIndex for s in fb.signatureDefs if s.signatureKey.decode() == signature)]
    return Counter(codes[op.opcodeIndex] for op in sg.operators)


def test_hadamard_rotates_only_the_matching_matrices(float_model, float_logits):
    """One rotation per input of the matrices a pattern matches (q, k and v share theirs), none elsewhere. The
    blocks here (128, 256) are factored: RESHAPE, FULLY_CONNECTED over 64, TRANSPOSE, FULLY_CONNECTED over the
    rest, TRANSPOSE, RESHAPE between the quantizer's two RESHAPEs."""
    recipe = _load(_recipe("int8_dynamic"))
    plain = _op_counts(_quantize(float_model, dataclasses.replace(recipe, hadamard=[])))
    for patterns, rotated in [(["down_proj"], LAYERS), (["[qkv]_proj", "down_proj"], 2 * LAYERS)]:
        model = _quantize(float_model, dataclasses.replace(recipe, hadamard=patterns))
        added = _op_counts(model) - plain
        assert added == Counter(FULLY_CONNECTED=2 * rotated, RESHAPE=4 * rotated, TRANSPOSE=2 * rotated), patterns
        metrics = logit_metrics(_stack(float_logits), _stack(_logits(model)))
        assert _keeps_its_answers(metrics), (patterns, metrics)


def test_hadamard_max_caps_the_rotation_block(float_model):
    """The cap shows as the largest rotation factor: 0 lets down_proj's input rotate in one HIDDEN block."""
    recipe = dataclasses.replace(_load(_recipe("int8_dynamic")), hadamard=["down_proj"])
    for cap, sizes in [(0, {64, HIDDEN // 64}), (64, {64})]:
        weights = _weights(_quantize(float_model, dataclasses.replace(recipe, hadamard_max=cap)))
        assert {int(nbytes**0.5) // 2 for name, (_, nbytes) in weights.items() if "hadamard" in name} == sizes


def test_hadamard_skips_zero_point_matrices(float_model):
    """int4 with zero points stays on its grid: a pattern matching it rotates only the int8 matrices."""
    recipe = QuantConfig(
        name="b32",
        mode=QuantMode.int4_block32,
        zero_point=True,
        hadamard=["self_attn", "mlp"],
        components=ComponentModes(attention=QuantMode.int8_dynamic),
    )
    plan = _plan(flatbuffer_utils.read_model_from_bytearray(bytearray(float_model)), recipe, DECODER)
    rotated = {(mode, rotate): len(scopes) for (mode, _, rotate, _), scopes in plan.items()}
    assert rotated[QuantMode.int8_dynamic, True] == 4 * 2 * LAYERS  # q, k, v, o in two signatures
    assert rotated[QuantMode.int4_block32, False] >= 3 * 2 * LAYERS and (QuantMode.int4_block32, True) not in rotated


def test_int4_table_in_a_zero_point_recipe(float_model, float_logits):
    """Only the int4 halves of asymmetric matrices (`.symmetric`, on their blocks' grid) take the quantizer's weight
    recovery, which refuses weights off a 4-bit grid: a tied table in int4 (no zero points) gets min-max blocks in a
    zero-point recipe too, one int4 buffer for the lookup and the lm_head."""
    int4 = QuantMode.int4_block32
    recipe = QuantConfig(
        name="b32_table4",
        mode=int4,
        zero_point=True,
        components=ComponentModes(embedding=int4, lm_head=int4, attention=QuantMode.int8_dynamic),
        check=_load(_recipe("int4_block128")).check,
    )
    plan = _plan(flatbuffer_utils.read_model_from_bytearray(bytearray(float_model)), recipe, DECODER)
    assert {on_grid for (mode, _, _, on_grid) in plan if mode is int4} == {False}  # no `.symmetric` op here
    model = _quantize(float_model, recipe)
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    tables = {(t.buffer, t.type) for sg in fb.subgraphs for t in sg.tensors if list(t.shape) == [VOCAB, DIM]}
    assert len(tables) == 1 and _TYPE[tables.pop()[1]] == "INT4"
    metrics = logit_metrics(_stack(float_logits), _stack(_logits(model)))
    assert _keeps_its_answers(metrics), metrics


def test_overrides_set_the_mode_of_matching_matrices(float_model):
    """An override takes the matrices its pattern matches out of their component's mode, and only those."""
    recipe = QuantConfig(
        name="o4", mode=QuantMode.int8_dynamic, overrides=[ModeOverride("o_proj", QuantMode.int4_block32)]
    )
    weights = _weights(_quantize(float_model, recipe))
    assert {d for n, (d, _) in weights.items() if "o_proj" in n} == {"INT4", "FLOAT16"}  # values, block scales
    assert {d for n, (d, _) in weights.items() if "q_proj" in n or ".mlp/" in n} == {"INT8"}


def _meta_model(entry: str) -> torch.nn.Module:
    cfg = compose_cfg([f"model={entry}", "variant=small"])
    with torch.device("meta"):
        return kind_of(cfg).build(cfg.model.arch, cfg.export)


def test_recipes_are_checked_against_the_models_weight_names():
    """Malformed recipes, and patterns or components that select no weight, are refused before any work."""
    model = _meta_model("tinyllama")

    def check(**fields) -> None:
        validate_recipe(QuantConfig(mode=QuantMode.int8_dynamic, **fields), DECODER, model, "tinyllama")

    with pytest.raises(ConfigError, match="hadamard pattern '\\(' is not a regex"):
        check(hadamard=["("])
    with pytest.raises(ConfigError, match="hadamard_max must be a power of two"):
        check(hadamard=["mlp"], hadamard_max=48)
    with pytest.raises(ConfigError, match="quant.zero_points must be one of none, fp16, int8_weight_only"):
        check(zero_points=QuantMode.int4_block32)
    with pytest.raises(ConfigError, match="overrides pattern 'out_proj' matches no weight of tinyllama"):
        check(overrides=[ModeOverride("out_proj", QuantMode.int4_block32)])
    with pytest.raises(ConfigError, match=r"\['SelfAttention'\] match no weight of tinyllama"):
        check(hadamard=["SelfAttention"])
    with pytest.raises(ConfigError, match="components.lm_head selects no weight of minilm_l6"):
        validate_recipe(
            QuantConfig(mode=QuantMode.int8_dynamic, components=ComponentModes(lm_head=QuantMode.fp16)),
            KINDS["encoder"].components,
            _meta_model("minilm_l6"),
            "minilm_l6",
        )
    check(hadamard=["qkv_proj", "down_proj"])


def test_logit_cosine_and_top1_are_reported_not_bounded():
    """Where a check measures distributions (KL) the logits' cosine and top-1 do not fail it (Gemma-2B's good int8
    file: cosine 0.99638, KL 0.0030; Qwen2.5-0.5B random: top-1 0.84 at KL 0.00055); an encoder's cosine, its only
    figure, is bounded; a broken file's KL still fails it."""
    bounds = QuantCheck(min_cosine=0.9966)
    assert check_failures({"cosine": 0.99638, "top1": 1.0, "kl": 0.0030, "simulated_kl": 0.0028}, bounds) == []
    assert check_failures({"cosine": 0.9985, "top1": 0.84375, "kl": 0.00055, "simulated_kl": 0.0005}, bounds) == []
    assert check_failures({"cosine": 0.99, "max_abs_diff": 0.1}, bounds) == ["cosine 0.99 violates bound 0.9966"]
    assert check_failures({"cosine": 0.9, "top1": 0.5, "kl": 0.4, "simulated_kl": 0.003}, bounds) == [
        "kl 0.4 violates bound 0.0091"
    ]
