"""Asymmetric int4 blocks on symmetric kernels.

LiteRT's blockwise int4 FULLY_CONNECTED and ai-edge-quantizer know only symmetric blocks (levels -8..7 around 0).
A block quantized with a zero point has 16 levels from its min to its max: W = s * (q - 8) + z with q in 0..15,
so W x = [s * (q - 8)] x + z * (block sums of x). The first term is a symmetric int4 matrix (the quantizer recovers
its exact scales with DEQUANTIZED_WEIGHT_RECOVERY); the second is a float matrix with one column per block, over the
input summed per block. For weights that already were 4-bit asymmetric blocks (GGUF Q4_1, as SmolLM2 ships) the
result is exact, where symmetric int4 costs SmolLM2 its answers (logit cosine 0.81).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

LEVELS = 16


class AsymmetricLinear(nn.Module):
    """`linear` as a symmetric int4-grid matrix plus a zero-point matrix over per-block input sums."""

    def __init__(self, linear: nn.Linear, block: int):
        super().__init__()
        w = linear.weight.detach()
        out_features, in_features = w.shape
        blocks = w.reshape(out_features, in_features // block, block)
        lo, hi = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
        scale = ((hi - lo) / (LEVELS - 1)).clamp(min=torch.finfo(w.dtype).tiny)
        q = torch.round((blocks - lo) / scale).clamp(0, LEVELS - 1)
        centre = LEVELS // 2
        self.block = block
        self.symmetric = nn.Linear(in_features, out_features, bias=linear.bias is not None)
        self.symmetric.weight = nn.Parameter(((q - centre) * scale).reshape(out_features, in_features),
                                             requires_grad=False)
        if linear.bias is not None:
            self.symmetric.bias = linear.bias
        self.zero_point = nn.Linear(in_features // block, out_features, bias=False)
        self.zero_point.weight = nn.Parameter((lo + centre * scale).squeeze(-1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sums = x.reshape(*x.shape[:-1], -1, self.block).sum(-1)
        return self.symmetric(x) + self.zero_point(sums)


def with_zero_points(model: nn.Module, block_of: dict[str, int]) -> nn.Module:
    """A copy of `model` (sharing every other tensor) whose Linear modules named in `block_of` are asymmetric."""
    if not block_of:
        return model
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    clone = copy.deepcopy(model, memo=shared)
    for name, block in block_of.items():
        parent, _, child = name.rpartition(".")
        holder = clone.get_submodule(parent)
        setattr(holder, child, AsymmetricLinear(getattr(holder, child), block))
    return clone
