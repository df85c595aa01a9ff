"""The `small` variant: an entry shrunk to a tiny seeded random model that keeps every architecture flag.

Sizes are derived from the entry (MQA stays MQA, MHA stays MHA, the layer pattern fits), so a test of the small
variant exercises the same code paths as the real model; `reference.hf_config` follows by interpolation.
"""

from __future__ import annotations

from omegaconf import DictConfig


def shrink(cfg: DictConfig) -> None:
    """Shrink the composed (typed, unresolved) config in place."""
    arch, att = cfg.model.arch, cfg.model.arch.attention
    heads, kv_heads = att.num_heads, att.num_kv_heads
    att.num_heads = 4
    att.num_kv_heads = 1 if kv_heads == 1 else 4 if kv_heads == heads else 2
    att.head_dim = 16
    if att.sliding_window:
        att.sliding_window = min(att.sliding_window, 8)
    arch.dim = 64
    arch.num_layers = max(2, len(att.layer_types))
    arch.mlp.hidden_dim = 128
    arch.vocab_size = 512
    rope = arch.rope
    for key in ("short_factor", "long_factor"):  # longrope: one factor per rotated pair, evenly picked
        factors = list(rope[key])
        if factors:
            rope[key] = spread(factors, int(att.head_dim * rope.fraction) // 2)
    cfg.model.checkpoint = "random"
    if cfg.model.tokenizer.source == "checkpoint":  # random weights bring no tokenizer; one given by path stays
        cfg.model.tokenizer.source = "none"
        cfg.export.bundles = []  # bundles carry a tokenizer: none without one


def spread(values: list, n: int) -> list:
    """n of `values` picked evenly from first to last (the shape of a frequency-factor curve survives)."""
    return [values[round(i * (len(values) - 1) / max(n - 1, 1))] for i in range(n)]
