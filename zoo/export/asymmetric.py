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

The export reads weights one at a time (zoo/export/weights.py): `with_zero_points` swaps the Linear modules for
AsymmetricLinear ones with meta parameters of their shapes, and `ZeroPointWeights` computes both matrices of one
Linear from one read of its weight when the exporter asks for either. Only the outlier columns, which set the
zero-point matrix's width, need the weights earlier: with `outliers`, each such weight is read once more up front.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

LEVELS = 16


def outlier_columns(w: torch.Tensor, outliers: float) -> list[int]:
    """Input columns of `w` holding a weight above `outliers` times its RMS (none for 0)."""
    if not outliers:
        return []
    return torch.nonzero((w.abs() > outliers * w.pow(2).mean().sqrt()).any(0)).flatten().tolist()


ROWS_AT_ONCE = 1 << 22  # elements of `w` split at a time: the temporaries of a few rows, not of the matrix


def split(
    w: torch.Tensor, block: int, columns: list[int], stored=lambda scale: scale
) -> tuple[torch.Tensor, torch.Tensor]:
    """`w` [out, in] as its symmetric int4-grid matrix [out, in] and the zero-point matrix [out, in/block +
    len(columns)] (block zero points, then the outlier columns' residuals); `stored`: the block scales as the
    symmetric matrix applies them (zoo/export/simulate.py: as the kernels hold them). Computed a few rows at a time
    (each row's blocks are its own), so the peak is `w` and the result, not five float copies of `w` (Mistral-7B's
    fused gate/up: 0.5 GB each)."""
    out_features, in_features = w.shape
    symmetric = torch.empty_like(w)
    side = torch.empty(out_features, in_features // block + len(columns), dtype=w.dtype)
    step = max(1, ROWS_AT_ONCE // in_features)
    for start in range(0, out_features, step):
        rows = slice(start, start + step)
        symmetric[rows], side[rows] = _split_rows(w[rows], block, columns, stored)
    return symmetric, side


def _split_rows(w: torch.Tensor, block: int, columns: list[int], stored) -> tuple[torch.Tensor, torch.Tensor]:
    out_features, in_features = w.shape
    full = w
    if columns:
        w = w.clone()
        w[:, columns] = 0
    blocks = w.reshape(out_features, in_features // block, block)
    lo, hi = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
    scale = ((hi - lo) / (LEVELS - 1)).clamp(min=torch.finfo(w.dtype).tiny)
    q = torch.round((blocks - lo) / scale).clamp(0, LEVELS - 1)
    centre = LEVELS // 2
    symmetric = ((q - centre) * stored(scale)).reshape(out_features, in_features)
    zero_point = (lo + centre * scale).squeeze(-1)
    dequantized = symmetric[:, columns] + zero_point[:, [c // block for c in columns]]
    return symmetric, torch.cat([zero_point, full[:, columns] - dequantized], 1)


class AsymmetricLinear(nn.Module):
    """`linear` as a symmetric int4-grid matrix plus a zero-point matrix over per-block input sums. A meta
    `linear` (or `columns` given) gives meta parameters of the right shapes, filled by ZeroPointWeights."""

    def __init__(self, linear: nn.Linear, block: int, outliers: float = 0.0, columns: list[int] | None = None):
        super().__init__()
        w = linear.weight.detach()
        out_features, in_features = w.shape
        self.block = block
        self.columns = outlier_columns(w, outliers) if columns is None else list(columns)
        self.symmetric = nn.Linear(in_features, out_features, bias=linear.bias is not None, device="meta")
        self.zero_point = nn.Linear(in_features // block + len(self.columns), out_features, bias=False, device="meta")
        if linear.bias is not None:
            self.symmetric.bias = linear.bias
        if columns is None and not w.is_meta:
            symmetric, side = split(w, block, self.columns)
            self.symmetric.weight = nn.Parameter(symmetric, requires_grad=False)
            self.zero_point.weight = nn.Parameter(side, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = [x.reshape(*x.shape[:-1], -1, self.block).sum(-1)] + [x[..., c : c + 1] for c in self.columns]
        return self.symmetric(x) + self.zero_point(torch.cat(side, -1) if self.columns else side[0])


def with_zero_points(
    model: nn.Module, block_of: dict[str, tuple[int, float]], weights: Mapping[str, np.ndarray] | None = None
) -> tuple[nn.Module, Mapping[str, np.ndarray] | None]:
    """A copy of `model` (sharing every other tensor) whose Linear modules named in `block_of` are asymmetric, each
    with its (block, outliers), and the weight source of the copy. With `weights` (a source keyed by `model`'s state
    names, zoo/export/weights.py) the new modules have meta parameters and the source computes them per Linear
    (outlier columns read up front); without, they are computed now from `model`'s own tensors."""
    if not block_of:
        return model, weights
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    clone = copy.deepcopy(model, memo=shared)
    layout = {}
    for name, (block, outliers) in block_of.items():
        parent, _, child = name.rpartition(".")
        holder = clone.get_submodule(parent)
        linear = getattr(holder, child)
        if weights is None:
            setattr(holder, child, AsymmetricLinear(linear, block, outliers))
            continue
        columns = outlier_columns(torch.from_numpy(weights[f"{name}.weight"]), outliers) if outliers else []
        setattr(holder, child, AsymmetricLinear(linear, block, columns=columns))
        layout[name] = (block, columns)
    return clone, (None if weights is None else ZeroPointWeights(weights, layout))


class ZeroPointWeights(Mapping[str, np.ndarray]):
    """`weights` with each asymmetric Linear's `weight` (and `bias`) read as `symmetric.weight`, `zero_point.weight`
    (and `symmetric.bias`): one read of the weight gives both matrices. Reading `symmetric.weight` holds the small
    zero-point matrix until it is asked for; asked for first, the zero-point matrix is computed alone (the weight is
    then read again for the symmetric one), so a full-size float matrix is never held in waiting."""

    _PARTS = ("symmetric.weight", "zero_point.weight")

    def __init__(self, weights: Mapping[str, np.ndarray], layout: dict[str, tuple[int, list[int]]]):
        self._weights, self._layout, self._held = weights, layout, {}

    def _base(self, name: str) -> tuple[str, str] | None:
        linear, _, part = name.rpartition(".")
        linear, _, half = linear.rpartition(".")
        part = f"{half}.{part}"
        return (linear, part) if linear in self._layout and part in (*self._PARTS, "symmetric.bias") else None

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._held:
            return self._held.pop(name)
        base = self._base(name)
        if base is None:
            return self._weights[name]
        linear, part = base
        if part == "symmetric.bias":
            return self._weights[f"{linear}.bias"]
        block, columns = self._layout[linear]
        symmetric, side = split(torch.from_numpy(np.asarray(self._weights[f"{linear}.weight"])), block, columns)
        if part == "zero_point.weight":
            return side.numpy()
        self._held[f"{linear}.zero_point.weight"] = side.numpy()
        return symmetric.numpy()

    def __iter__(self) -> Iterator[str]:
        for name in self._weights:
            linear, _, leaf = name.rpartition(".")
            if linear not in self._layout:
                yield name
            elif leaf == "weight":
                yield from (f"{linear}.{p}" for p in self._PARTS)
            elif leaf == "bias":
                yield f"{linear}.symmetric.bias"

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._held or self._base(name) is not None or name in self._weights)
