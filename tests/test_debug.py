"""The divergence finder (zoo/debug/) on faults injected on purpose into small variants: it must name the place."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from zoo.architectures.layers import rope_inv_freq
from zoo.debug.finder import find
from zoo.debug.run import run_finder
from zoo.errors import CheckFailed
from zoo.kinds import kind_of
from zoo.pipeline import load_model, resolve_checkpoint, run

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # every case exports a model

SMALL = ["variant=small", "export.prefill_lens=[16]", "export.kv_cache_max=64", "debug.blame=0"]


def loaded_model(overrides: list[str]):
    cfg = compose_cfg(overrides)
    return cfg, load_model(cfg, kind_of(cfg), resolve_checkpoint(cfg).checkpoint).model


def finding_of(cfg, model, exported, tmp_path):
    """`exported` (a copy of `model`, maybe broken) exported by cfg's recipe; the finder against `model`."""
    kind = kind_of(cfg)
    path = tmp_path / "model.tflite"
    kind.export(exported, path, cfg)
    inputs = kind.golden_inputs(cfg, None)
    return find(path, kind.debug_programs(model, inputs, cfg), cfg.quant.check, cfg.threads)


def test_a_weight_broken_in_the_export_names_its_layer(tmp_path):
    """PyTorch right, the export wrong in layer 1's gate/up matrix: every node before it is within the bounds, the
    first node past them is that matrix's output, in prefill and decode alike."""
    cfg, model = loaded_model(["model=smollm2_135m", "model.arch.num_layers=3", *SMALL])
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.model.layers[1].mlp.gate_up_proj.weight[5, 7] += 3.0
    finding = finding_of(cfg, model, broken, tmp_path)
    assert finding.first_failing.node == "model.layers.1.mlp.gate_up_proj"
    assert finding.worst.layer == "model.layers.1"
    for signature in ("prefill_16", "decode"):
        nodes = [n for n in finding.nodes if n.signature == signature]
        first = next(i for i, n in enumerate(nodes) if n.past_bounds)
        assert nodes[first].node == "model.layers.1.mlp.gate_up_proj"
        assert all(n.rel_rms < 1e-5 for n in nodes[:first]), nodes[:first]
        assert nodes[-1].node.startswith("output:")


def test_a_wrong_rope_base_in_the_export_names_the_first_attention(tmp_path):
    """RoPE frequencies of another base in the exported copy only: the embeddings, norms and q/k/v projections agree,
    the first node past the bounds is layer 0's attention."""
    cfg, model = loaded_model(["model=smollm2_135m", *SMALL])
    broken = copy.deepcopy(model)
    arch = cfg.model.arch
    broken.model.rotary_emb.inv_freq = rope_inv_freq(arch, 10 * arch.rope.theta, arch.rope.short_factor)
    finding = finding_of(cfg, model, broken, tmp_path)
    assert finding.first_failing.node.startswith("model.layers.0.self_attn"), finding.first_failing
    before = finding.nodes[: finding.nodes.index(finding.first_failing)]
    assert "model.layers.0.self_attn.qkv_proj" in [n.node for n in before]
    assert all(n.rel_rms < 1e-5 for n in before)


def test_an_outlier_under_int4_names_its_matrix_and_blame_finds_it(tmp_path):
    """Only layer 1's down_proj quantized to int4 (every other weight op kept float by `quant.keep_float`), with a
    huge weight in it, in PyTorch and the export alike: the finder names that matrix as the node adding the most
    error, and keeping it float takes away nearly all of the output's error."""
    overrides = ["model=smollm2_135m", "model.arch.num_layers=3", *SMALL, "quant=int4_block32", "debug.blame=2"]
    cfg, model = loaded_model(overrides)
    cfg.quant.keep_float = [r"^(?!.*layers\.1\.mlp\.down_proj)"]  # everything else stays float
    with torch.no_grad():
        weight = model.model.layers[1].mlp.down_proj.weight
        weight[3, 40] = 200 * weight.pow(2).mean().sqrt()
    kind = kind_of(cfg)
    path = tmp_path / "model.tflite"
    kind.export(model, path, cfg)
    section = run_finder(cfg, kind, model, kind.golden_inputs(cfg, None), path, tmp_path)
    assert section["worst"]["node"] == "model.layers.1.mlp.down_proj"
    assert section["blame"][0]["op"] == "model.layers.1.mlp.down_proj"
    assert section["blame"][0]["share"] > 0.9, section["blame"]
    assert section["culprit"] == "model.layers.1.mlp.down_proj"
    written = json.loads((tmp_path / "debug.json").read_text())
    assert written["worst"] == section["worst"] and len(written["nodes"]) == section["nodes"]


@pytest.mark.parametrize("entry", ["flan_t5_small", "minilm_l6"])
def test_encoder_kinds_run_through_the_finder(entry, tmp_path):
    """A float export of a T5 and a MiniLM small variant: every signature compared, modules matched, all within
    fp32 bounds."""
    cfg, model = loaded_model([f"model={entry}", "variant=small", "debug.blame=0"])
    finding = finding_of(cfg, model, model, tmp_path)
    signatures = {n.signature for n in finding.nodes}
    assert signatures == {"encode", "decode"} if entry == "flan_t5_small" else {"embed"}
    inner = [n for n in finding.nodes if not n.node.startswith("output:")]
    assert len(inner) >= 10 and any(".layer" in n.node for n in inner), [n.node for n in inner]
    assert finding.first_failing is None, finding.first_failing
    assert max(n.rel_rms for n in finding.nodes) < 1e-4


def test_a_failing_check_runs_the_finder_with_on_fail(tmp_path):
    """`debug.on_fail=true`: the run still fails on its check, after the finder wrote debug.json and report.json's
    `debug` section (first node past the bounds, worst node)."""
    cfg = compose_cfg(["model=smollm2_135m", *SMALL, "quant.check.max_abs_diff=1e-12", "debug.on_fail=true"])
    with pytest.raises(CheckFailed):
        run(cfg, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["debug"]["first_failing"] is not None
    assert report["debug"]["worst"]["layer"].startswith("model.layers.")
    nodes = json.loads((tmp_path / "debug.json").read_text())["nodes"]
    assert {n["signature"] for n in nodes} == {"prefill_16", "decode"}
    assert any(n["node"] == "output:logits" for n in nodes)
