"""The residual stream rotated offline (QuaRot, SpinQuant): the same function with fewer ops per token.

Per-token int8 clips the massive channels that the residual stream carries into every norm's output; a Hadamard
rotation spreads them. Rotating each matrix's input online (`quant.hadamard`) costs 3 ops per input at every step.
With `quant.rotate_residual` the stream itself lives rotated, x' = x Q (Q orthogonal: block-diagonal Sylvester
Hadamard, blocks of the largest power of two dividing `dim`, at most `hadamard_max` or 512), and every rotation is
folded into weights before export:

- RMSNorm is rotation-invariant up to its gamma: rms(x Q) = rms(x). Each layer norm's gamma folds into the
  matrices reading it, W <- W diag(gamma) Q, and becomes 1; q/k/v and gate/up inputs arrive rotated, with no op;
- what writes into the stream (o_proj, down_proj, the embedding tables) writes rotated: W <- Q^T W, b <- b Q,
  E <- E Q;
- the final norm folds into an untied lm_head the same way; a tied table (E Q, read by both ends) instead keeps
  gamma between two float rotations of the final hidden state, once per step (`Norm.rotation_in`/`rotation_out`).

The `hadamard` patterns of those readers (READERS) are then skipped: only the MLP's hidden units (down_proj's
input) keep an online rotation. Exact in real arithmetic; in float32 the logits move by ~1e-5 of their range at most.
Needs pre-norm RMSNorm blocks without post-norms; other architectures keep the `hadamard` list's online rotations.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import torch
from torch import nn

from zoo.architectures.decoder import Decoder
from zoo.export.rotation import hadamard
from zoo.schema import NormType, QuantConfig

log = logging.getLogger(__name__)
# A tied table's final-norm rotations read a float [b, b] block each step: 1 MiB at 512, 16 MiB at 2048.
MAX_BLOCK = 512


def block_size(dim: int, cap: int) -> int:
    """The largest power of two dividing `dim`, at most `cap` (0: no cap)."""
    block = dim & -dim
    return min(block, cap) if cap else block


# Weight ops reading (or, for the tied table, also writing) the rotated stream: their online rotations are dropped.
READERS = r"\.(?:qkv_proj|gate_up_proj|up_proj)\b|\blm_head\b|\bembed_tokens\b"


def unrotatable(model: nn.Module) -> str | None:
    """Why `model`'s function would not survive a rotated residual stream, or None."""
    if not isinstance(model, Decoder):
        return "not a decoder"
    if NormType(model.arch.norm.type) is not NormType.rms:
        return "LayerNorm subtracts the mean, which a rotation moves"
    if model.arch.post_attn_norm or model.arch.post_mlp_norm:
        return "post-norms normalize a sublayer's output before the residual add"
    return None


class BlockRotation(nn.Module):
    """x -> x Q for block-diagonal Q of [b, b] blocks: a float FULLY_CONNECTED over [-1, b] (kept float by the
    quantizer: zoo/export/quantize.py ROTATION)."""

    def __init__(self, block: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(block.T.contiguous(), requires_grad=False)  # F.linear multiplies by weight^T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.weight.shape[0]
        return nn.functional.linear(x.reshape(-1, b), self.weight).reshape(x.shape)


def _rotate_in(linear: nn.Linear, q: torch.Tensor, gamma: torch.Tensor) -> None:
    """linear reads the rotated stream: W <- W diag(gamma) Q."""
    w = linear.weight.detach().double() * gamma.double()
    linear.weight = nn.Parameter((w @ q).float(), requires_grad=False)


def _rotate_out(linear: nn.Linear, q: torch.Tensor) -> None:
    """linear writes into the rotated stream: W <- Q^T W, b <- b Q."""
    linear.weight = nn.Parameter((q.T @ linear.weight.detach().double()).float(), requires_grad=False)
    if linear.bias is not None:
        linear.bias = nn.Parameter((linear.bias.detach().double() @ q).float(), requires_grad=False)


def _gamma(norm) -> torch.Tensor:
    """The norm's multiplier, then set to the identity (1, or 0 for a zero-centred weight)."""
    w = norm.weight.detach()
    gamma = 1.0 + w if norm.zero_centered else w.clone()
    norm.weight = nn.Parameter(torch.zeros_like(w) if norm.zero_centered else torch.ones_like(w), requires_grad=False)
    return gamma


def _reads(mlp) -> nn.Linear:
    return mlp.gate_up_proj if mlp.gated else mlp.up_proj


def rotated(model: nn.Module, recipe: QuantConfig) -> tuple[nn.Module, QuantConfig]:
    """`model` (a zoo Decoder) with its residual stream rotated when the recipe asks and the architecture allows (a
    copy: rotated tensors new, every other tensor shared), and the recipe as applied: `rotate_residual` off where it
    was not done, so the `hadamard` list then applies in full."""
    if not recipe.rotate_residual:
        return model, recipe
    if why := unrotatable(model):
        log.info("quant %s: residual stream not rotated (%s): online rotations as listed", recipe.name, why)
        return model, replace(recipe, rotate_residual=False)
    arch = model.arch
    b = block_size(arch.dim, recipe.hadamard_max or MAX_BLOCK)
    h = torch.from_numpy(hadamard(b)).double()
    q = torch.block_diag(*[h] * (arch.dim // b))
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    clone = copy.deepcopy(model, memo=shared)
    m = clone.model
    for table in (m.embed_tokens, m.embed_positions):
        if table is not None:
            table.weight = nn.Parameter((table.weight.detach().double() @ q).float(), requires_grad=False)
    for layer in m.layers:
        gamma = _gamma(layer.input_layernorm)
        _rotate_in(layer.self_attn.qkv_proj, q, gamma)
        _rotate_out(layer.self_attn.o_proj, q)
        _rotate_in(_reads(layer.mlp), q, gamma if layer.parallel else _gamma(layer.pre_feedforward_layernorm))
        _rotate_out(layer.mlp.down_proj, q)
    if clone.lm_head is not None:
        _rotate_in(clone.lm_head, q, _gamma(m.norm))
    else:  # the tied table is E Q: gamma between Q^T and Q, in the original basis
        m.norm.rotation_in, m.norm.rotation_out = BlockRotation(h.T.float()), BlockRotation(h.float())
    return clone, recipe
