"""Golden logits of every entry: transformers vs golden/ (regenerable), ours vs golden/, and the live gate.

Everything is computed in float64 (zoo/exact.py), so golden/ holds transformers' float64 values and every comparison
uses the gate's own tolerance (`golden.atol`): float64 reordering moves a logit by at most ~1e-9 (SmolLM2 full,
whose residual channels reach thousands; ~1e-15 for the small variants), a thousand times below it, on any machine.

Regenerate golden/ (runs transformers only, never our model):
    pytest tests/test_golden.py -k reference --force-regen
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import golden, pipeline
from zoo.checkpoint import Weights, resolve
from zoo.checkpoint.tokenizer import load_tokenizer
from zoo.exact import float64
from zoo.kinds import kind_of

from conftest import ENTRIES, GOLDEN, compose_cfg, entries_of

# (entry, variant): every entry as its small random variant; entries with real weights offline also at full size.
# The fast tier keeps one entry of each kind, and a sliding-window decoder with q/k norms; the full suite runs every
# entry.
FAST = {"smollm2_135m", "gemma3_270m", "flan_t5_small", "minilm_l6"}
SLOW = [("smollm2_135m", "full"), ("minilm_l6", "full")] + [(e, "small") for e in ENTRIES if e not in FAST]
CASES = [(e, "small") for e in ENTRIES if e in FAST] + [pytest.param(c, marks=pytest.mark.slow) for c in SLOW]


def case_id(case) -> str:
    return f"{case[0]}.{case[1]}"


def golden_path(case) -> Path:
    return GOLDEN / f"{case_id(case)}.npz"


_cache: dict = {}


def setup(case):
    """Config, checkpoint, tokenizer and prompts of a case (cached: the real checkpoint takes ~20 s to read)."""
    if case not in _cache:
        cfg = compose_cfg([f"model={case[0]}", f"variant={case[1]}"])
        checkpoint = resolve(cfg.model.checkpoint, cfg.model.reference, cfg.seed)
        tokenizer = load_tokenizer(cfg.model.tokenizer, checkpoint)
        prompts = kind_of(cfg).golden_inputs(cfg, tokenizer)
        _cache[case] = cfg, checkpoint, prompts
    return _cache[case]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_matches_golden(case, ndarrays_regression):
    """transformers' own output on the entry's weights is what golden/ holds (and what --force-regen writes)."""
    cfg, checkpoint, prompts = setup(case)
    hf = golden.reference_model(cfg.model.reference, checkpoint)
    with float64(hf):
        arrays = kind_of(cfg).reference_arrays(hf, prompts, cfg)
    assert all(a.dtype == np.float64 for k, a in arrays.items() if k.endswith("_value"))
    ints = {k: {"atol": 0, "rtol": 0} for k in arrays if not k.endswith("_value")}
    ndarrays_regression.check(
        arrays, fullpath=golden_path(case), default_tolerance={"atol": cfg.golden.atol, "rtol": 0}, tolerances=ints
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_ours_matches_golden(case):
    """Our model, built and loaded from the entry, against the stored transformers reference."""
    cfg, checkpoint, prompts = setup(case)
    stored = dict(np.load(golden_path(case)))
    assert all(a.dtype == np.float64 for k, a in stored.items() if k.endswith("_value")), "regenerate: float64 values"
    assert [stored[f"p{i}_ids"].tolist() for i in range(len(prompts))] == prompts
    model = pipeline.whole(pipeline.load_model(cfg, kind_of(cfg), checkpoint))
    with float64(model):
        result = kind_of(cfg).compare(model, stored, cfg)
    assert result["max_abs_diff"] <= cfg.golden.atol, result
    assert result["greedy_equal"] == result["greedy_total"], result


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_live_gate(case):
    """The run's own gate: ours vs transformers live, greedy tokens, cached decode vs full forward."""
    cfg, checkpoint, _prompts = setup(case)
    section = pipeline.verify(cfg, pipeline.load_model(cfg, kind_of(cfg), checkpoint)).result.to_report()
    assert section["passed"] and section["max_abs_diff"] <= cfg.golden.atol, section
    if cfg.model.expect_answer and case[1] == "full":
        assert section["answer_ok"], section["answer"]


@pytest.mark.parametrize(
    "entry", [e if e in FAST else pytest.param(e, marks=pytest.mark.slow) for e in entries_of("decoder")]
)
def test_streamed_gate_equals_resident(entry):
    """resident_gib=0: both models stay on the meta device and are read a layer at a time (zoo/stream.py); the gate
    compares the hidden state after every layer and gives the resident run's figures."""
    cfg = compose_cfg([f"model={entry}", "variant=small", "resident_gib=0"])
    checkpoint = pipeline.resolve_checkpoint(cfg).checkpoint
    loaded = pipeline.load_model(cfg, kind_of(cfg), checkpoint)
    assert all(p.is_meta for p in loaded.model.parameters())
    streamed = pipeline.verify(cfg, loaded).result.to_report()
    resident = pipeline.verify(
        cfg, pipeline.load_model(replace(cfg, resident_gib=2.0), kind_of(replace(cfg, resident_gib=2.0)), checkpoint)
    ).result.to_report()
    assert streamed["passed"], streamed
    assert len(streamed["layers_max_rel_diff"]) == cfg.model.arch.num_layers + 1
    assert max(streamed["layers_max_rel_diff"]) <= cfg.golden.atol
    assert streamed["greedy_tokens_equal"] == resident["greedy_tokens_equal"]
    assert abs(streamed["max_abs_diff"] - resident["max_abs_diff"]) <= 1e-9


@pytest.mark.parametrize("entry", ["gemma3_270m", "gemma_2b"])
def test_streamed_gate_with_tables_kept_bf16(entry, monkeypatch):
    """Tables past exact.WIDEN_BLOCK stay in the checkpoint's bf16 on both sides (Gemma's 256k rows at full size;
    Gemma3 casts its embedding scale to the table's dtype): the gate still passes every layer at its tolerance."""
    from zoo import exact

    cfg = compose_cfg([f"model={entry}", "variant=small", "resident_gib=0"])
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    table = cfg.model.arch.vocab_size * cfg.model.arch.dim
    monkeypatch.setattr(exact, "WIDEN_BLOCK", table // 4)  # larger than any layer's matrix, smaller than the table
    section = pipeline.verify(cfg, loaded).result.to_report()
    assert section["passed"] and max(section["layers_max_rel_diff"]) <= cfg.golden.atol, section


def test_streamed_gate_names_the_first_layer_that_differs():
    """A wrong weight in layer 0's MLP, read through the streamed path: the gate fails and names hidden state 1
    (after layer 0) as the first that differs."""
    cfg = compose_cfg(["model=tinyllama", "variant=small", "resident_gib=0"])
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)

    class Wrong(Weights):
        def get(self, name, dtype=torch.float32):
            tensor = super().get(name, dtype)
            if name == "model.layers.0.mlp.down_proj.weight":
                tensor[0, 0] += 0.05
            return tensor

    weights = Wrong(loaded.weights.rules, loaded.weights.tensors, loaded.weights.shapes)
    gate = pipeline.verify(cfg, replace(loaded, weights=weights))
    assert gate.failure.startswith("golden FAIL") and gate.result.figures.first_layer_off == 1, gate.result
    assert "after layer 0" in gate.failure


def test_gate_catches_a_wrong_weight():
    """A single perturbed weight (a copy: our params share storage with the reference) fails the gate."""
    cfg, checkpoint, _ = setup(("tinyllama", "small"))
    loaded = pipeline.load_model(cfg, kind_of(cfg), checkpoint)
    weight = loaded.model.model.layers[1].mlp.down_proj.weight
    weight.data = weight.data.clone()
    weight.data[0, 0] += 0.05
    gate = pipeline.verify(cfg, loaded)
    assert gate.failure.startswith("golden FAIL") and gate.result.figures.max_abs_diff > cfg.golden.atol


def test_gate_catches_a_wrong_rope_theta():
    """An architecture slip that keeps every shape (RoPE theta) is caught by the numbers, not by loading."""
    cfg = compose_cfg(["model=tinyllama", "variant=small"])
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    cfg.model.arch.rope.theta = 500000.0
    from zoo.checkpoint import load

    wrong = kind_of(cfg).build(cfg.model.arch, cfg.export)
    load(wrong, loaded.checkpoint.tensors, cfg.model.mapping, cfg.model.arch.num_layers)
    cfg.model.arch.rope.theta = 10000.0
    assert pipeline.verify(cfg, replace(loaded, model=wrong, tokenizer=None)).failure


@pytest.mark.slow  # reads the real checkpoint
def test_prompts_are_chat_templated_for_real_weights():
    cfg, _, prompts = setup(("smollm2_135m", "full"))
    assert len(prompts) == len(cfg.golden.prompts) and all(len(p) > 5 for p in prompts)
    assert torch.tensor(prompts[0]).max() < cfg.model.arch.vocab_size


def test_large_tables_widen_by_the_rows_used(monkeypatch):
    """A float32 table past exact.WIDEN_BLOCK (Gemma's 256k rows) is widened by the rows an embedding gathers and,
    as a linear weight (a tied head), in blocks: the same float64 numbers as widening it whole."""
    import torch.nn.functional as F

    from zoo import exact

    monkeypatch.setattr(exact, "WIDEN_BLOCK", 40)
    table, x = torch.randn(50, 8), torch.randn(3, 8)
    with float64():
        rows = F.embedding(torch.tensor([3, 7]), table)
        logits = F.linear(x, table)
        keyword = F.linear(input=x, weight=table, bias=torch.ones(50))
    assert rows.dtype == logits.dtype == torch.float64
    assert torch.equal(rows, table.double()[[3, 7]])
    assert torch.allclose(logits, x.double() @ table.double().T, rtol=0, atol=1e-12)
    assert torch.allclose(keyword, x.double() @ table.double().T + 1, rtol=0, atol=1e-12)


def test_streamed_bf16_table_widens_exactly_and_is_never_widened_whole(monkeypatch):
    """A streamed table keeps its checkpoint's bf16 (zoo/stream.py): lookups and the tied head give the numbers of
    the table widened whole, and asking its dtype or shape inside the float64 mode does not copy it."""
    import torch.nn.functional as F

    from zoo import exact

    monkeypatch.setattr(exact, "WIDEN_BLOCK", 40)
    table, x = torch.randn(50, 8).bfloat16(), torch.randn(3, 8)
    widened = []
    monkeypatch.setattr(torch.Tensor, "double", lambda t: widened.append(t.numel()) or t.to(torch.float64))
    with float64():
        assert (table.dtype, table.shape) == (torch.bfloat16, (50, 8))
        assert widened == []
        rows = F.embedding(torch.tensor([3, 7]), table)
        logits = F.linear(x, table)
        scale = torch.tensor(2.0).to(table.dtype)  # transformers' Gemma3 casts its embed scale to the table's dtype
    assert max(widened) < table.numel()
    assert rows.dtype == logits.dtype == scale.dtype == torch.float64
    assert torch.equal(rows, table.double()[[3, 7]])
    assert torch.allclose(logits, x.double() @ table.double().T, rtol=0, atol=1e-12)
