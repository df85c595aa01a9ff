"""The generic BERT-style encoder: every encoder entry is this module with different config fields.

BERT layout (module names are HF BertModel's, so the checkpoint maps by identity): word + learned position
(+ token-type) embeddings and a LayerNorm, then post-LN layers (x = norm(x + sublayer(x))) with biases everywhere,
bidirectional attention with a padding mask, and pooling of the last hidden states into one sentence embedding
(`arch.pooling`: mean over real tokens or the first token, optionally L2-normalised).
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.architectures.layers import ACTIVATIONS, Norm
from zoo.architectures.mha import attend, padding_bias, split_heads
from zoo.schema import Activation, ArchConfig, Pooling
from zoo.schema import head_dim as arch_head_dim


class Embeddings(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(arch.vocab_size, arch.dim)
        self.position_embeddings = nn.Embedding(arch.max_positions, arch.dim)
        types = arch.type_vocab_size
        self.token_type_embeddings = nn.Embedding(types, arch.dim) if types else None
        self.LayerNorm = Norm(arch.dim, arch.norm)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Single-segment input: every token has type 0."""
        x = self.word_embeddings(tokens) + self.position_embeddings(torch.arange(tokens.shape[1]))[None]
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        att = arch.attention
        self.heads, inner = att.num_heads, att.num_heads * arch_head_dim(arch)
        self.query = nn.Linear(arch.dim, inner, bias=att.qkv_bias)
        self.key = nn.Linear(arch.dim, inner, bias=att.qkv_bias)
        self.value = nn.Linear(arch.dim, inner, bias=att.qkv_bias)
        self.scale = (att.query_pre_attn_scalar or arch_head_dim(arch)) ** -0.5

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.query, self.key, self.value))
        return attend(q, k, v, bias, self.scale)


class Output(nn.Module):
    """dense, then LayerNorm of the residual sum (post-LN): HF's BertSelfOutput / BertOutput."""

    def __init__(self, arch: ArchConfig, in_dim: int, bias: bool):
        super().__init__()
        self.dense = nn.Linear(in_dim, arch.dim, bias=bias)
        self.LayerNorm = Norm(arch.dim, arch.norm)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class Attention(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.self = SelfAttention(arch)
        self.output = Output(arch, arch.attention.num_heads * arch_head_dim(arch), arch.attention.out_bias)


class Intermediate(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.dense = nn.Linear(arch.dim, arch.mlp.hidden_dim, bias=arch.mlp.bias)
        self.act = ACTIVATIONS[Activation(arch.mlp.activation)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.attention = Attention(arch)
        self.intermediate = Intermediate(arch)
        self.output = Output(arch, arch.mlp.hidden_dim, arch.mlp.bias)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, bias), x)
        return self.output(self.intermediate(x), x)


class Stack(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(arch) for _ in range(arch.num_layers))


class Encoder(nn.Module):
    """tokens, attention_mask [1, S] (1 = token, 0 = padding) -> sentence embedding [1, dim]; `hidden` gives the
    last hidden states [1, S, dim]."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.arch = arch
        self.embeddings = Embeddings(arch)
        self.encoder = Stack(arch)

    def hidden(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x, bias = self.embeddings(tokens), padding_bias(attention_mask)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return pool(self.hidden(tokens, attention_mask), attention_mask, self.arch)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
    """hidden [B, S, dim] -> [B, dim] by `arch.pooling` (sentence-transformers' Pooling and Normalize modules)."""
    if Pooling(arch.pooling.mode) is Pooling.cls:
        out = hidden[:, 0]
    else:
        mask = attention_mask.float()[:, :, None]
        out = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
    if arch.pooling.normalize:
        out = out * torch.rsqrt(torch.clamp((out * out).sum(-1, keepdim=True), min=1e-24))
    return out
