"""The one decoder-only builder: every decoder entry in zoo/conf/model/ is this module with different config fields."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.architectures.layers import MLP, Attention, Norm, Rope, cache_slots
from zoo.schema import ArchConfig, KVLayout, LayerType, Positions, Residual, layer_type
from zoo.schema import head_dim as arch_head_dim

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class DecoderLayer(nn.Module):
    def __init__(self, arch: ArchConfig, layer: int):
        super().__init__()
        self.parallel = Residual(arch.residual) is Residual.parallel
        self.input_layernorm = Norm(arch.dim, arch.norm)
        self.self_attn = Attention(arch, layer)
        self.mlp = MLP(arch)
        self.pre_feedforward_layernorm = None if self.parallel else Norm(arch.dim, arch.norm)
        self.post_attention_layernorm = Norm(arch.dim, arch.norm) if arch.post_attn_norm else None
        self.post_feedforward_layernorm = Norm(arch.dim, arch.norm) if arch.post_mlp_norm else None

    def forward(self, x, input_pos, rope, k_cache, v_cache, layout: KVLayout, slots, mask):
        h = self.input_layernorm(x)
        attn, k_cache, v_cache = self.self_attn(h, input_pos, rope, k_cache, v_cache, layout, slots, mask)
        if self.post_attention_layernorm is not None:
            attn = self.post_attention_layernorm(attn)
        if self.parallel:
            mlp = self.mlp(h)
        else:
            x = x + attn
            mlp = self.mlp(self.pre_feedforward_layernorm(x))
        if self.post_feedforward_layernorm is not None:
            mlp = self.post_feedforward_layernorm(mlp)
        x = x + attn + mlp if self.parallel else x + mlp
        return x, k_cache, v_cache


class DecoderModel(nn.Module):
    """Embeddings, layers and final norm: HF's `model.` prefix."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.dim)
        learned = Positions(arch.positions) is Positions.learned
        self.embed_positions = nn.Embedding(arch.max_positions, arch.dim) if learned else None
        # sqrt(dim) rounded to float32 as transformers' float32 buffer holds it (the small variants' dims: exact)
        self.embed_scale = float(np.float32(arch.dim**0.5)) if arch.scale_embeddings else None
        self.layers = nn.ModuleList(DecoderLayer(arch, i) for i in range(arch.num_layers))
        self.norm = Norm(arch.dim, arch.norm)
        rope = Positions(arch.positions) is Positions.rope
        self.rotary_emb = Rope(arch, arch.rope.theta) if rope else None
        local = rope and arch.rope.local_theta is not None
        self.rotary_emb_local = Rope(arch, arch.rope.local_theta) if local else None
        self.local_layers = [layer_type(arch, i) is LayerType.sliding for i in range(arch.num_layers)]


class Decoder(nn.Module):
    """tokens [1, T], input_pos [T], a fixed-size KV cache (one K, V pair per layer) -> logits, updated cache.

    The cache is functional (passed in, returned updated) so the exported program has no mutable buffers. Attention
    reads the filled slots rounded up to `read_multiple` (0: all of them; layers.filled_slots).
    """

    def __init__(self, arch: ArchConfig, layout: KVLayout = KVLayout.btnh, read_multiple: int = 0):
        super().__init__()
        self.arch, self.layout, self.read_multiple = arch, KVLayout(layout), read_multiple
        self.model = DecoderModel(arch)
        self.lm_head = None if arch.tie_embeddings else nn.Linear(arch.dim, arch.vocab_size, bias=arch.lm_head_bias)
        self.final_softcap = arch.final_logit_softcap

    def kv_shapes(self, kv_max: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        g, h = self.arch.attention.num_kv_heads, arch_head_dim(self.arch)
        if self.layout is KVLayout.btnh:
            return (1, kv_max, g, h), (1, kv_max, g, h)
        return (1, g, kv_max, h), (1, g, h, kv_max)

    def empty_cache(self, kv_max: int) -> KVCache:
        k_shape, v_shape = self.kv_shapes(kv_max)
        return [(torch.zeros(k_shape), torch.zeros(v_shape)) for _ in range(self.arch.num_layers)]

    def embed(self, tokens, input_pos) -> torch.Tensor:
        m = self.model
        x = m.embed_tokens(tokens)
        if m.embed_scale is not None:
            x = x * torch.tensor(m.embed_scale, dtype=x.dtype)
        if m.embed_positions is not None:
            x = x + m.embed_positions(input_pos)[None]
        return x

    def layer_inputs(self, input_pos, kv_max: int) -> tuple[list, torch.Tensor]:
        """Each layer's (cos, sin) pair (its type's rope; None without rope) and the cache slots attention reads."""
        m = self.model
        rope = m.rotary_emb(input_pos) if m.rotary_emb is not None else None
        rope_local = m.rotary_emb_local(input_pos) if m.rotary_emb_local is not None else rope
        return [rope_local if local else rope for local in m.local_layers], cache_slots(
            input_pos, kv_max, self.read_multiple
        )

    def hidden(self, tokens, input_pos, kv_cache: KVCache, mask=None) -> tuple[torch.Tensor, KVCache]:
        x = self.embed(tokens, input_pos)
        kv_max = kv_cache[0][0].shape[1 if self.layout is KVLayout.btnh else 2]
        ropes, slots = self.layer_inputs(input_pos, kv_max)
        new_cache = []
        for layer, rope, (k_cache, v_cache) in zip(self.model.layers, ropes, kv_cache):
            x, k_cache, v_cache = layer(x, input_pos, rope, k_cache, v_cache, self.layout, slots, mask)
            new_cache.append((k_cache, v_cache))
        return self.model.norm(x), new_cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:
            logits = torch.nn.functional.linear(hidden, self.model.embed_tokens.weight)
        else:
            logits = self.lm_head(hidden)
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def forward(self, tokens, input_pos, kv_cache: KVCache, mask=None) -> tuple[torch.Tensor, KVCache]:
        hidden, kv_cache = self.hidden(tokens, input_pos, kv_cache, mask)
        return self.logits(hidden), kv_cache
