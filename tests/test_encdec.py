"""The encoder-decoder (T5) and encoder (BERT) kinds: builders vs transformers, their signatures, the post-export
check, greedy seq2seq through the flatbuffer, and MiniLM's real cosine similarities from the flatbuffer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
import torch
from ai_edge_litert.interpreter import Interpreter

from zoo import pipeline
from zoo.architectures.encoder_decoder import relative_bucket
from zoo.checkpoint import load
from zoo.errors import ConfigError
from zoo.export.convert import op_counts
from zoo.export.lower import lower
from zoo.kinds import kind_of

from conftest import GOLDEN, compose_cfg, entries_of

pytestmark = pytest.mark.slow  # T5 and BERT exports

ENCODER_EXPORT = ["export.encoder_len=40", "export.kv_cache_max=64", "export.check_steps=16"]
SIGNATURES = {"encoder_decoder": ["encode", "decode"], "encoder": ["embed"]}


@pytest.mark.parametrize("entry", entries_of("encoder_decoder", "encoder"))
def test_every_encoder_entry_exports_and_checks(entry, tmp_path):
    """Golden gate, export and check of the small variant; the flatbuffer's signatures have the documented names
    and shapes, builtin ops only, and T5's greedy generation through it equals transformers' (the golden file's)."""
    cfg = compose_cfg([f"model={entry}", "variant=small", *ENCODER_EXPORT])
    report = pipeline.run(cfg, tmp_path)
    kind, check = cfg.model.kind, report["check"]
    assert report["status"] == "ok" and check["passed"]
    assert check["max_abs_diff"] <= 1e-4 and check["cosine"] > 0.99999, check
    assert report["export"]["signatures"] == SIGNATURES[kind]
    path = pipeline.artifact_path(cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["report.json", path.name])
    assert not [op for op in op_counts(path.read_bytes()) if op.startswith("CUSTOM")]
    shapes = signature_shapes(path)
    if kind == "encoder":
        assert shapes["embed"] == {"tokens": [1, 40], "attention_mask": [1, 40], "embedding": [1, 64]}
        assert check["similarity_max_diff"] <= 1e-3
        return
    stored = dict(np.load(GOLDEN / f"{entry}.small.npz"))
    assert report["golden"]["reference_greedy"] == stored["p0_greedy"].tolist()
    assert check["greedy"] == 1.0 and check["positions"] == 16
    layers, cross, cache = cfg.model.arch.num_layers, [1, 4, 40, 16], [1, 64, 4, 16]
    assert shapes["encode"] == {
        "tokens": [1, 40],
        "attention_mask": [1, 40],
        "encoder_states": [1, 40, 64],
        **{f"cross_{k}_{i}": cross for i in range(layers) for k in "kv"},
    }
    assert shapes["decode"] == {
        "tokens": [1, 1],
        "input_pos": [1],
        "attention_mask": [1, 40],
        "logits": [1, 1, 512],
        **{f"cross_{k}_{i}": cross for i in range(layers) for k in "kv"},
        **{f"kv_cache_{k}_{i}": cache for i in range(layers) for k in "kv"},
    }


@pytest.mark.parametrize("entry", ["t5_small", "minilm_l6"])
def test_int8_dynamic_meets_its_bounds(entry, tmp_path):
    """The int8_dynamic recipe's check bounds (cosine, top-1, KL where there are logits) hold for the encoder kinds
    (without its rotations, whose patterns name decoder weights)."""
    cfg = compose_cfg([f"model={entry}", "variant=small", "quant=int8_dynamic", "quant.hadamard=[]", *ENCODER_EXPORT])
    report = pipeline.run(cfg, tmp_path)
    check = report["check"]
    assert check["passed"] and check["cosine"] >= cfg.quant.check.min_cosine, check
    assert report["export"]["size_bytes"] < 0.8 * 4 * report["num_params"]  # int8 matrices


def signature_shapes(path) -> dict[str, dict[str, list[int]]]:
    interpreter = Interpreter(model_path=str(path))
    out = {}
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)
        details = {**runner.get_input_details(), **runner.get_output_details()}
        out[name] = {k: d["shape"].tolist() for k, d in details.items()}
    return out


def test_minilm_flatbuffer_reproduces_reference_similarities(tmp_path):
    """MiniLM on its real weights: the exported `embed` gives transformers' cosine similarities (golden file) to
    1e-3, e.g. cosine("A man is eating food.", "A man is eating a piece of bread.") = 0.755."""
    cfg = compose_cfg(["model=minilm_l6", "export.encoder_len=32"])
    report = pipeline.run(cfg, tmp_path)
    stored = dict(np.load(GOLDEN / "minilm_l6.full.npz"))
    assert cfg.golden.sentences[:2] == ["A man is eating food.", "A man is eating a piece of bread."]
    assert round(float(stored["similarities_value"][0, 1]), 3) == 0.755
    embed = Interpreter(model_path=report["export"]["path"]).get_signature_runner("embed")
    rows = []
    for p in range(len(cfg.golden.sentences)):
        ids = stored[f"p{p}_ids"].tolist()
        pad = 32 - len(ids)
        rows.append(
            embed(
                tokens=np.array([ids + [0] * pad], np.int32),
                attention_mask=np.array([[1] * len(ids) + [0] * pad], np.int32),
            )["embedding"][0]
        )
    lite = np.stack(rows)
    assert np.allclose(np.linalg.norm(lite, axis=-1), 1, atol=1e-5)  # normalised in the graph
    assert np.abs(lite @ lite.T - stored["similarities_value"]).max() <= 1e-3
    assert report["check"]["similarity_max_diff"] <= 1e-3


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets, distance", [(32, 128), (16, 40)])
def test_relative_buckets_match_transformers(bidirectional, buckets, distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = torch.arange(-300, 300)[None, :] - torch.arange(0, 3)[:, None]
    ref = T5Attention._relative_position_bucket(relative, bidirectional, buckets, distance)
    assert torch.equal(relative_bucket(relative, bidirectional, buckets, distance), ref)


def test_gate_catches_a_wrong_max_distance():
    """A relative-position slip that keeps every shape is caught by the numbers."""
    cfg = compose_cfg(["model=t5_small", "variant=small"])
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    cfg.model.arch.relative.max_distance = 64
    wrong = kind_of(cfg).build(cfg.model.arch, cfg.export)
    load(wrong, loaded.checkpoint.tensors, cfg.model.mapping, cfg.model.arch.num_layers)
    assert pipeline.verify(cfg, replace(loaded, model=wrong, tokenizer=None)).failure.startswith("golden FAIL")


def test_untied_head_checkpoint_passes_gate(tmp_path):
    """flan-t5 stores an lm_head of its own (transformers 5 builds every T5 tied, so a random one has none): a
    saved checkpoint with a distinct head, as real flan-t5 files are, loads into our untied head and passes."""
    from safetensors.torch import save_file

    cfg = compose_cfg(["model=flan_t5_small", "variant=small"])
    checkpoint = pipeline.resolve_checkpoint(cfg).checkpoint
    tensors = {k: v.clone() for k, v in checkpoint.tensors.items() if "embed_tokens" not in k}
    tensors["lm_head.weight"] = torch.randn_like(tensors["shared.weight"])
    save_file(tensors, tmp_path / "model.safetensors")
    checkpoint.config.save_pretrained(tmp_path)
    cfg.model.checkpoint = str(tmp_path)
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    assert torch.equal(loaded.model.lm_head.weight, tensors["lm_head.weight"])
    assert pipeline.verify(cfg, loaded).result.passed


def test_kind_config_errors():
    with pytest.raises(ConfigError, match="export.kv_layout=transposed is for decoder entries"):
        compose_cfg(["model=t5_small", "export=litertlm"])
    with pytest.raises(ConfigError, match="export.encoder_len=1024 must be in 1..model.arch.max_positions=512"):
        compose_cfg(["model=minilm_l6", "export.encoder_len=1024"])


def test_lowered_ops_of_the_encoder_kinds():
    """log, abs, clamp and sum (relative buckets, mean pooling) lower to TF ops computing what torch does."""

    class Ops(torch.nn.Module):
        def forward(self, x, i):
            buckets = torch.clamp(torch.log(torch.clamp(i.abs(), min=1).float()) * 3, max=5).long()
            return torch.clamp(x, min=-0.5).sum(1, keepdim=True) + buckets.float()

    x, i = torch.randn(2, 3), torch.tensor([[-40, 0, 7]])
    program = torch.export.export(Ops(), (x, i), strict=False)
    got = lower(program, {})(tf.constant(x.numpy()), tf.constant(i.numpy(), tf.int32))[0]
    assert np.allclose(got.numpy(), Ops()(x, i).numpy(), atol=1e-6)
