"""Plain multi-head attention math shared by the encoder kinds (T5, BERT): heads in and out, scores plus an
additive bias (relative positions, padding, causality), softmax. No cache logic: callers pass full K and V."""

from __future__ import annotations

import torch

from zoo.architectures.layers import MASK_VALUE


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, heads * D] -> [B, heads, T, D]."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """q [B, H, T, D], k and v [B, H, S, D], bias broadcastable to [B, H, T, S] -> [B, T, H * D]."""
    scores = torch.matmul(q if scale == 1 else q * scale, k.transpose(-1, -2)) + bias
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    b, h, t, d = out.shape
    return out.transpose(1, 2).reshape(b, t, h * d)


def padding_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask [B, S] (1 = token, 0 = padding) -> additive bias [B, 1, 1, S] (large finite negative)."""
    return ((1 - attention_mask.float()) * MASK_VALUE)[:, None, None, :]
