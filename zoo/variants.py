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
    cfg.model.checkpoint = "random"
    if cfg.model.tokenizer.source == "checkpoint":  # random weights bring no tokenizer; one given by path stays
        cfg.model.tokenizer.source = "none"
        cfg.export.bundles = []  # bundles carry a tokenizer: none without one
