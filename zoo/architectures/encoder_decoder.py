"""The generic T5-style encoder-decoder: every encoder_decoder entry is this module with different config fields.

T5 layout (module names are HF's, so the checkpoint maps by identity): RMS-style norms before each sublayer, no
biases, no score scaling (`attention.query_pre_attn_scalar: 1`), a per-head relative position bias owned by the first
block of each stack and shared by all its layers (bidirectional buckets in the encoder, causal in the decoder),
gated-gelu (v1.1 / flan) or relu FFN, one `shared` embedding, and a decoder output scaled by dim**-0.5 before a tied
lm_head. The decoder reads a fixed-size self-attention KV cache (functional, like the decoder-only builder) and
cross-attention K/V that `cross_kv` projects once per input, so a decode step never re-projects encoder states.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.architectures.layers import ACTIVATIONS, Norm, cache_slots
from zoo.architectures.layers import attention_mask as causal_mask
from zoo.architectures.mha import attend, padding_bias, split_heads
from zoo.schema import Activation, ArchConfig, MLPType
from zoo.schema import head_dim as arch_head_dim

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


def relative_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of each relative distance (key position - query position), as transformers computes it.

    The log is taken of max(distance, 1): equal wherever the log branch is chosen, and never -inf.
    """
    if bidirectional:
        num_buckets //= 2
        distance = relative.abs()
    else:
        distance = torch.clamp(-relative, min=0)
    max_exact = num_buckets // 2
    scaled = torch.log(torch.clamp(distance, min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = torch.clamp(max_exact + (scaled * (num_buckets - max_exact)).long(), max=num_buckets - 1)
    buckets = torch.where(distance < max_exact, distance, large)
    return buckets + (relative > 0).long() * num_buckets if bidirectional else buckets


class T5Attention(nn.Module):
    def __init__(self, arch: ArchConfig, relative_bias: bool, bidirectional: bool):
        super().__init__()
        att = arch.attention
        self.heads, inner = att.num_heads, att.num_heads * arch_head_dim(arch)
        self.q = nn.Linear(arch.dim, inner, bias=False)
        self.k = nn.Linear(arch.dim, inner, bias=False)
        self.v = nn.Linear(arch.dim, inner, bias=False)
        self.o = nn.Linear(inner, arch.dim, bias=False)
        self.scale = (att.query_pre_attn_scalar or arch_head_dim(arch)) ** -0.5
        self.bidirectional, self.relative = bidirectional, arch.relative
        self.relative_attention_bias = nn.Embedding(arch.relative.num_buckets, self.heads) if relative_bias else None

    def position_bias(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """[1, heads, T, S] bias of queries at query_pos [T] over keys at key_pos [S]."""
        relative = key_pos[None, :] - query_pos[:, None]
        buckets = relative_bucket(relative, self.bidirectional, self.relative.num_buckets, self.relative.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V [B, heads, S, D] of x [B, S, dim]."""
        return split_heads(self.k(x), self.heads), split_heads(self.v(x), self.heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.o(attend(split_heads(self.q(x), self.heads), k, v, bias, self.scale))


class T5FF(nn.Module):
    """HF's T5DenseGatedActDense (wi_0 gate, wi_1 up) or T5DenseActDense (wi), then wo."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        mlp = arch.mlp
        self.gated = MLPType(mlp.type) is MLPType.gated
        self.act = ACTIVATIONS[Activation(mlp.activation)]
        if self.gated:
            self.wi_0 = nn.Linear(arch.dim, mlp.hidden_dim, bias=False)
            self.wi_1 = nn.Linear(arch.dim, mlp.hidden_dim, bias=False)
        else:
            self.wi = nn.Linear(arch.dim, mlp.hidden_dim, bias=False)
        self.wo = nn.Linear(mlp.hidden_dim, arch.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(h)


class SelfAttentionLayer(nn.Module):
    def __init__(self, arch: ArchConfig, relative_bias: bool, bidirectional: bool):
        super().__init__()
        self.SelfAttention = T5Attention(arch, relative_bias, bidirectional)
        self.layer_norm = Norm(arch.dim, arch.norm)


class CrossAttentionLayer(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.EncDecAttention = T5Attention(arch, False, True)
        self.layer_norm = Norm(arch.dim, arch.norm)


class FFLayer(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.DenseReluDense = T5FF(arch)
        self.layer_norm = Norm(arch.dim, arch.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class Block(nn.Module):
    """HF's T5Block: `layer` = [self-attention, (cross-attention,) feed-forward]."""

    def __init__(self, arch: ArchConfig, index: int, decoder: bool):
        super().__init__()
        parts = [SelfAttentionLayer(arch, index == 0, not decoder)]
        parts += [CrossAttentionLayer(arch)] if decoder else []
        self.layer = nn.ModuleList([*parts, FFLayer(arch)])


class Stack(nn.Module):
    def __init__(self, arch: ArchConfig, decoder: bool):
        super().__init__()
        self.block = nn.ModuleList(Block(arch, i, decoder) for i in range(arch.num_layers))
        self.final_layer_norm = Norm(arch.dim, arch.norm)

    def position_bias(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        return self.block[0].layer[0].SelfAttention.position_bias(query_pos, key_pos)


class EncoderDecoder(nn.Module):
    """`encode(tokens, attention_mask)` -> encoder states; `cross_kv(states)` -> per-layer cross K/V;
    `forward(tokens, input_pos, kv_cache, cross_kv, attention_mask)` -> decoder logits, updated self-attention cache.
    Self-attention reads the filled cache slots rounded up to `read_multiple` (0: all of them; layers.filled_slots).
    """

    def __init__(self, arch: ArchConfig, read_multiple: int = 0):
        super().__init__()
        self.arch, self.read_multiple = arch, read_multiple
        self.shared = nn.Embedding(arch.vocab_size, arch.dim)
        self.encoder = Stack(arch, decoder=False)
        self.decoder = Stack(arch, decoder=True)
        self.lm_head = None if arch.tie_embeddings else nn.Linear(arch.dim, arch.vocab_size, bias=False)

    def encode(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """tokens, attention_mask [1, S] -> encoder states [1, S, dim]; padded positions are masked as keys."""
        x = self.shared(tokens)
        pos = torch.arange(tokens.shape[1])
        bias = self.encoder.position_bias(pos, pos) + padding_bias(attention_mask)
        for block in self.encoder.block:
            sa, ff = block.layer
            h = sa.layer_norm(x)
            x = x + sa.SelfAttention(h, *sa.SelfAttention.kv(h), bias)
            x = ff(x)
        return self.encoder.final_layer_norm(x)

    def cross_kv(self, states: torch.Tensor) -> KVCache:
        """Each decoder layer's cross-attention K, V [1, heads, S, head_dim], computed once per input."""
        return [block.layer[1].EncDecAttention.kv(states) for block in self.decoder.block]

    def kv_shapes(self, kv_max: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = (1, kv_max, self.arch.attention.num_heads, arch_head_dim(self.arch))
        return shape, shape

    def empty_cache(self, kv_max: int) -> KVCache:
        k_shape, v_shape = self.kv_shapes(kv_max)
        return [(torch.zeros(k_shape), torch.zeros(v_shape)) for _ in range(self.arch.num_layers)]

    def forward(self, tokens, input_pos, kv_cache: KVCache, cross_kv: KVCache, attention_mask):
        """tokens [1, T] at input_pos [T] over a KV cache [1, kv_max, heads, head_dim] per layer -> logits [1, T, V]."""
        x = self.shared(tokens)
        slots = cache_slots(input_pos, kv_cache[0][0].shape[1], self.read_multiple)
        n = slots.shape[0]
        self_bias = self.decoder.position_bias(input_pos, slots) + causal_mask(input_pos, slots, None)
        cross_bias = padding_bias(attention_mask)
        new_cache = []
        for block, (k_cache, v_cache), (cross_k, cross_v) in zip(self.decoder.block, kv_cache, cross_kv):
            sa, ca, ff = block.layer
            attn = sa.SelfAttention
            h = sa.layer_norm(x)
            b, t, _ = h.shape
            k = attn.k(h).view(b, t, attn.heads, -1)
            v = attn.v(h).view(b, t, attn.heads, -1)
            k_cache = k_cache.index_copy(1, input_pos, k)
            v_cache = v_cache.index_copy(1, input_pos, v)
            x = x + attn(h, k_cache[:, :n].transpose(1, 2), v_cache[:, :n].transpose(1, 2), self_bias)
            x = x + ca.EncDecAttention(ca.layer_norm(x), cross_k, cross_v, cross_bias)
            x = ff(x)
            new_cache.append((k_cache, v_cache))
        return self.logits(self.decoder.final_layer_norm(x)), new_cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head(hidden)
        scaled = hidden * torch.tensor(self.arch.dim**-0.5, dtype=hidden.dtype)
        return torch.nn.functional.linear(scaled, self.shared.weight)
