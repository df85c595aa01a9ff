"""Family features of the generic decoder, each checked against transformers on an entry's small random variant.

A feature counts only if it is load-bearing: the entry matches transformers with it, and the same weights with
the feature switched off in our model alone no longer do (the reference keeps the checkpoint's own config).
"""

from __future__ import annotations

import pytest
import torch

from zoo import golden
from zoo.checkpoint import load, resolve
from zoo.config import hf_layer_types
from zoo.errors import ConfigError
from zoo.kinds import kind_of
from zoo.kinds.decoder.gate import our_prefill, our_stepwise, reference_logits
from zoo.schema import LayerType

from conftest import compose_cfg

KV_MAX = 64
PROMPT_LEN = 33  # beyond every small variant's sliding window (zoo/variants.py caps it at 8)


def ours_and_reference(entry: str, overrides: tuple[str, ...] = (), arch_changes: dict | None = None):
    """Our model (with `arch_changes` applied to it only) and transformers' on the same seeded random weights."""
    cfg = compose_cfg([f"model={entry}", "variant=small", *overrides])
    checkpoint = resolve(cfg.model.checkpoint, cfg.model.reference, cfg.seed)
    hf = golden.reference_model(cfg.model.reference, checkpoint)
    for dotted, value in (arch_changes or {}).items():
        *path, key = dotted.split(".")
        node = cfg.model.arch
        for part in path:
            node = getattr(node, part)
        setattr(node, key, value)
    model = kind_of(cfg).build(cfg.model.arch, cfg.export)
    load(model, checkpoint.tensors, cfg.model.mapping, cfg.model.arch.num_layers)
    ids = torch.randint(cfg.model.arch.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(1)).tolist()
    return model, hf, ids


def prefill_diff(entry: str, overrides: tuple[str, ...] = (), arch_changes: dict | None = None) -> float:
    model, hf, ids = ours_and_reference(entry, overrides, arch_changes)
    ours, _ = our_prefill(model, ids, KV_MAX)
    return float((ours - reference_logits(hf, ids)).abs().max())


# (entry, our arch field, a wrong value that keeps every parameter shape, overrides of the entry)
# Seeded random scores and logits are tiny: softcaps of 50 and 30 would not bite, small ones do (for transformers too).
FEATURES = [
    ("gemma2_2b", "attention.logit_softcap", None, ("model.arch.attention.logit_softcap=0.005",)),
    ("gemma2_2b", "final_logit_softcap", None, ("model.arch.final_logit_softcap=0.1",)),
    ("gemma2_2b", "attention.query_pre_attn_scalar", None),
    ("gemma2_2b", "attention.layer_types", [LayerType.full]),
    ("gemma2_2b", "scale_embeddings", False),
    ("gemma3_1b", "rope.local_theta", None),
    ("gemma3_1b", "attention.sliding_window", 4096),
    ("gemma3_1b", "norm.zero_centered", False),
    ("phi_2", "rope.fraction", 1.0),
    ("phi3_5_mini", "rope.scaling", "default"),
    ("mistral_7b", "attention.layer_types", [LayerType.full]),
    ("gpt2", "norm.eps", 0.1),  # the LayerNorm eps (1e-5) reaches the logits
]


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f"{f[0]}-{f[1]}")
def test_feature_is_load_bearing(feature):
    entry, field, wrong, *overrides = feature
    overrides = overrides[0] if overrides else ()
    assert prefill_diff(entry, overrides) <= 1e-4
    assert prefill_diff(entry, overrides, {field: wrong}) > 1e-4  # the golden gate's atol: it would catch the slip


@pytest.mark.parametrize("entry", ["mistral_7b", "gemma2_2b", "gemma3_270m"])
def test_sliding_window_decode_past_the_window(entry):
    """One token at a time through the cache, positions 0..32 with a window of 8: equal to transformers' logits."""
    model, hf, ids = ours_and_reference(entry)
    window = model.arch.attention.sliding_window
    assert window and len(ids) > 2 * window
    stepwise = our_stepwise(model, ids, KV_MAX)
    assert float((stepwise - reference_logits(hf, ids)).abs().max()) <= 1e-4


def test_longrope_switches_to_long_factors_past_the_original_context():
    """Phi-3.5's longrope: a prompt past original_max_positions (16 here) rotates with the long factors, like
    transformers; our model with short factors in their place misses."""
    overrides = ("model.arch.rope.original_max_positions=16",)
    assert prefill_diff("phi3_5_mini", overrides) <= 1e-4
    cfg = compose_cfg(["model=phi3_5_mini", "variant=small", *overrides])
    short = list(cfg.model.arch.rope.short_factor)
    assert prefill_diff("phi3_5_mini", overrides, {"rope.long_factor": short}) > 1e-4


def test_small_variant_spreads_longrope_factors():
    full = compose_cfg(["model=phi3_5_mini"]).model.arch.rope
    small = compose_cfg(["model=phi3_5_mini", "variant=small"]).model.arch.rope
    assert len(small.long_factor) == 8 and len(full.long_factor) == 48
    assert small.long_factor[0] == full.long_factor[0] and small.long_factor[-1] == full.long_factor[-1]


def test_longrope_factor_count_is_validated():
    with pytest.raises(
        ConfigError, match=r"model.arch.rope.short_factor: longrope needs rotary_dim/2=48 values, got 2"
    ):
        compose_cfg(["model=phi3_5_mini", "model.arch.rope.short_factor=[1.0,2.0]"])


def test_hf_layer_types_repeats_the_pattern():
    assert hf_layer_types(["sliding", "full"], 5) == [
        "sliding_attention",
        "full_attention",
        "sliding_attention",
        "full_attention",
        "sliding_attention",
    ]
    cfg = compose_cfg(["model=gemma3_270m"])
    types = cfg.model.reference.hf_config["layer_types"]
    assert len(types) == 18 and [i for i, t in enumerate(types) if t == "full_attention"] == [5, 11, 17]
