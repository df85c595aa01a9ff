"""Asymmetric int4 blocks on symmetric kernels.

LiteRT's blockwise int4 FULLY_CONNECTED and ai-edge-quantizer know only symmetric blocks (levels -8..7 around 0).
A block quantized with a zero point has 16 levels from its min to its max: W = s * (q - 8) + z with q in 0..15,
so W x = [s * (q - 8)] x + z * (block sums of x). The first term is a symmetric int4 matrix (the quantizer recovers
its exact scales with DEQUANTIZED_WEIGHT_RECOVERY); the second is a float matrix with one column per block, over the
input summed per block. For weights that already were 4-bit asymmetric blocks (GGUF Q4_1, as SmolLM2 ships) the
result is exact, where symmetric int4 costs SmolLM2 its answers (logit cosine 0.81).

Blocks coarser than the weights' own grid are not exact, and one input column can make that fatal: SmolLM2's layer
11 down_proj reads a massive activation (~3000 on the first token, unit 1229) through a column holding a "super
weight" (5.9, 30x the matrix's RMS) that also stretches its 128-block's range. Such outlier columns (`outliers`:
a weight above that many times the RMS) are zeroed in the int4 matrix and carried exactly by the float matrix,
which reads them next to the block sums: W x = [int4] x + Z (block sums of x) + R x_J, R = W_J - dequantized W_J.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

LEVELS = 16


class AsymmetricLinear(nn.Module):
    """`linear` as a symmetric int4-grid matrix plus a zero-point matrix over per-block input sums."""

    def __init__(self, linear: nn.Linear, block: int, outliers: float = 0.0):
        super().__init__()
        w = linear.weight.detach()
        out_features, in_features = w.shape
        columns = []
        if outliers:
            columns = torch.nonzero((w.abs() > outliers * w.pow(2).mean().sqrt()).any(0)).flatten().tolist()
            w = w.clone()
            w[:, columns] = 0
        blocks = w.reshape(out_features, in_features // block, block)
        lo, hi = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
        scale = ((hi - lo) / (LEVELS - 1)).clamp(min=torch.finfo(w.dtype).tiny)
        q = torch.round((blocks - lo) / scale).clamp(0, LEVELS - 1)
        centre = LEVELS // 2
        self.block, self.columns = block, columns
        symmetric = ((q - centre) * scale).reshape(out_features, in_features)
        zero_point = (lo + centre * scale).squeeze(-1)
        self.symmetric = nn.Linear(in_features, out_features, bias=linear.bias is not None)
        self.symmetric.weight = nn.Parameter(symmetric, requires_grad=False)
        if linear.bias is not None:
            self.symmetric.bias = linear.bias
        dequantized = symmetric[:, columns] + zero_point[:, [c // block for c in columns]]
        side = torch.cat([zero_point, linear.weight.detach()[:, columns] - dequantized], 1)
        self.zero_point = nn.Linear(side.shape[1], out_features, bias=False)
        self.zero_point.weight = nn.Parameter(side, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = [x.reshape(*x.shape[:-1], -1, self.block).sum(-1)] + [x[..., c : c + 1] for c in self.columns]
        return self.symmetric(x) + self.zero_point(torch.cat(side, -1) if self.columns else side[0])


def with_zero_points(model: nn.Module, block_of: dict[str, tuple[int, float]]) -> nn.Module:
    """A copy of `model` (sharing every other tensor) whose Linear modules named in `block_of` are asymmetric, each
    with its (block, outliers)."""
    if not block_of:
        return model
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    clone = copy.deepcopy(model, memo=shared)
    for name, (block, outliers) in block_of.items():
        parent, _, child = name.rpartition(".")
        holder = clone.get_submodule(parent)
        setattr(holder, child, AsymmetricLinear(getattr(holder, child), block, outliers))
    return clone
