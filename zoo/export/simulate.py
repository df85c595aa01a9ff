"""A quant recipe's rounding done on the PyTorch model: what the recipe costs this model, the check's yardstick.

How far a good file's logits may be from the float model's depends on the model as much as on the recipe: the same
int4_block32 file costs SmolLM2's real weights KL 0.02 and Mistral-7B's random ones 0.47. So the post-export check
(zoo/check.py) also runs the PyTorch model with the recipe's rounding applied and bounds the file's KL by a multiple
of that simulation's: a good file is near its simulation on any model, a wrong weight, op or cache write is not.

Rounded as the quantizer and the kernels round (zoo/export/quantize.py resolves each module's mode as its survey
of the flatbuffer does): weights per output channel to int8, in blocks to int4 (with zero points and exact outlier
columns where the recipe asks, zoo/export/asymmetric.py), or to fp16, in the Hadamard basis where the recipe
rotates; the inputs of dynamic-range ops per row to int8 (asymmetric, as XNNPACK's qd8 kernels do). Not simulated:
a tied table's second mode when its lookup and lm_head differ (the lookup's mode serves both).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from zoo import exact
from zoo.export.asymmetric import outlier_columns, split
from zoo.export.quantize import BLOCK_SIZE, module_mode, rotation_block
from zoo.export.recipe import component_of
from zoo.schema import QuantConfig, QuantMode

DYNAMIC = (QuantMode.int8_dynamic, *BLOCK_SIZE)  # int8 inputs at run time
ROWS = 1024  # weight rows rounded at a time: transients of one block, not of a 14336-row matrix


@dataclass(frozen=True)
class Rounding:
    mode: QuantMode
    rotation: int  # Hadamard block of the input dimension (0: none)
    zero_points: QuantMode | None  # int4 blocks with zero points (asymmetric): the zero-point matrix's mode
    outliers: float  # the recipe's outlier threshold for zero-point blocks

    def stored(self, w: torch.Tensor) -> torch.Tensor:
        """`w` [rows, inputs] as the file stores it: rounded, and in the Hadamard basis where the recipe rotates (as
        `inputs` gives the input: their product is the file's), in w's dtype (row blocks, in float32 as the
        quantizer computes)."""
        if self.mode is QuantMode.none:
            return w
        with exact.paused():
            columns = outlier_columns(w.float(), self.outliers) if self.zero_points is not None else []
            out = torch.empty_like(w)
            for start in range(0, w.shape[0], ROWS):
                part = _rotated(w[start : start + ROWS].float(), self.rotation)
                out[start : start + ROWS] = self._round(part, columns)
        return out

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """`w` rounded as the file stores it, in its own basis (a lookup's rows)."""
        with exact.paused():
            return _rotated(self.stored(w), self.rotation)

    def _round(self, w: torch.Tensor, columns: list[int]) -> torch.Tensor:
        if self.mode is QuantMode.none:
            return w
        if self.mode is QuantMode.fp16:
            return w.half().float()
        if self.mode in BLOCK_SIZE:
            block = BLOCK_SIZE[self.mode]
            if self.zero_points is not None:
                symmetric, side = split(w, block, columns, _bf16)
                side = Rounding(self.zero_points, 0, None, 0.0)._round(side, [])
                rounded = symmetric + side[:, : w.shape[1] // block].repeat_interleave(block, 1)
                rounded[:, columns] = w[:, columns]  # carried exactly by the zero-point matrix
                return rounded
            blocks = w.reshape(w.shape[0], -1, block)
            return _symmetric(blocks, 7, -8, _bf16).reshape(w.shape)
        return _symmetric(w, 127, -127)  # int8 per output channel

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """An op's input as the kernel sees it, in the basis of `stored`: rotated where the recipe rotates, and for
        a dynamic-range op rounded per row to asymmetric int8 (in float32)."""
        if self.mode not in DYNAMIC:
            return _rotated(x, self.rotation)
        with exact.paused():
            r = _rotated(x.float(), self.rotation)
            lo, hi = r.amin(-1, keepdim=True).clamp(max=0), r.amax(-1, keepdim=True).clamp(min=0)
            scale = ((hi - lo) / 255).clamp(min=torch.finfo(torch.float32).tiny)
            zero = torch.round(-128 - lo / scale)
            q = (torch.round(r / scale) + zero).clamp(-128, 127)
            return ((q - zero) * scale).to(x.dtype)


def _symmetric(w: torch.Tensor, top: int, bottom: int, stored=lambda s: s) -> torch.Tensor:
    """Symmetric rounding over the last axis: one scale per row (max |w| / top, as `stored` keeps it), levels
    bottom..top."""
    scale = stored((w.abs().amax(-1, keepdim=True) / top).clamp(min=torch.finfo(w.dtype).tiny))
    return torch.round(w / scale).clamp(bottom, top) * scale


def _bf16(scale: torch.Tensor) -> torch.Tensor:
    """A block scale as XNNPACK's blockwise int4 kernels hold it: bfloat16."""
    return scale.bfloat16().to(scale.dtype)


def _rotated(x: torch.Tensor, block: int) -> torch.Tensor:
    """`x` [..., n] times the normalized Sylvester Hadamard matrix of `block` (the quantizer's, its own inverse), in
    blocks along the last axis. That matrix is H_a (x) H_b for block = a * b, so a block viewed as [a, b] is
    H_a @ X @ H_b: two small matmuls (7x faster than log2(block) butterfly passes on a 3072-wide weight)."""
    if not block:
        return x
    a = 1 << (block.bit_length() - 1) // 2
    b = block // a
    y = x.reshape(-1, a, b) @ _sylvester(b, x.dtype)
    return (_sylvester(a, x.dtype) @ y).reshape(x.shape) / math.sqrt(block)


@functools.cache
def _sylvester(n: int, dtype: torch.dtype) -> torch.Tensor:
    """The unnormalized Sylvester Hadamard matrix of size n (a power of 2)."""
    h = torch.ones(1, 1, dtype=dtype)
    while len(h) < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def rows(out: torch.Tensor) -> torch.Tensor:
    """A lookup's rows as a [rows, dim] float64 matrix of the table's rows, to round as the table's."""
    with exact.paused():
        return out.double().flatten(0, -2)


def roundings(model: nn.Module, recipe: QuantConfig, components: Mapping[str, str]) -> dict[str, Rounding]:
    """Module path -> its rounding under `recipe`, for every weight the recipe quantizes; a tied lm_head (the
    embedding table read by F.linear) as `lm_head`."""
    modules = list(model.named_modules())
    tables = [m for n, m in modules if isinstance(m, nn.Embedding) and component_of(n, components) == "embedding"]
    if getattr(model, "lm_head", "absent") is None and tables:
        vocab, width = tables[0].weight.shape
        modules.append(("lm_head", nn.Linear(width, vocab, bias=False, device="meta")))
    out = {}
    for name, module in modules:
        mode = module_mode(recipe, components, name, module)
        if mode is QuantMode.none:
            continue
        width = module.in_features if isinstance(module, nn.Linear) else module.embedding_dim
        asymmetric = recipe.zero_point and isinstance(module, nn.Linear) and mode in BLOCK_SIZE
        zero_points = recipe.zero_points if asymmetric else None
        out[name] = Rounding(mode, rotation_block(recipe, name, mode, width), zero_points, recipe.outliers)
    return out


class _TiedHead(TorchFunctionMode):
    """F.linear over an embedding table's own weight (a tied lm_head) with the table and its input rounded; the
    rounded table is made once per weight object (a streamed model reads the table afresh for each block)."""

    def __init__(self, tables: list[nn.Embedding], rounding: Rounding):
        super().__init__()
        self.tables, self.rounding, self.rounded = tables, rounding, (None, None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and any(args[1] is t._parameters["weight"] for t in self.tables):
            if self.rounded[0] is not args[1]:
                self.rounded = (None, None)  # the former copy goes before the new one is made
                self.rounded = (args[1], self.rounding.stored(args[1]))
            return func(self.rounding.inputs(args[0]), self.rounded[1], *args[2:], **kwargs)
        return func(*args, **kwargs)


@contextmanager
def simulated(model: nn.Module, rounds: dict[str, Rounding]) -> Iterator[nn.Module]:
    """`model` running with `rounds` applied: each rounded Linear swaps in its weight as stored (read or resident)
    and takes its input as the kernel sees it, for the duration of its call; an Embedding rounds the rows it
    returns; a tied lm_head (`lm_head`) reads the table as stored and its input as the kernel sees it."""
    handles, held = [], {}

    def swap(module: nn.Module, rounding: Rounding) -> None:
        held[id(module)] = module._parameters["weight"]
        module._parameters["weight"] = nn.Parameter(rounding.stored(module.weight), requires_grad=False)

    def restore(module: nn.Module) -> None:
        module._parameters["weight"] = held.pop(id(module))

    for name, module in model.named_modules():
        rounding = rounds.get(name)
        if rounding is None:
            continue
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(lambda m, args, r=rounding: (swap(m, r), args)[1]))
            handles.append(module.register_forward_pre_hook(lambda m, args, r=rounding: (r.inputs(args[0]),)))
            handles.append(module.register_forward_hook(lambda m, args, out: restore(m)))
        elif isinstance(module, nn.Embedding):
            handles.append(
                module.register_forward_hook(lambda m, args, out, r=rounding: r.weight(rows(out)).view(out.shape))
            )
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    head = rounds.get("lm_head") if getattr(model, "lm_head", "absent") is None else None
    tied = _TiedHead(tables, head) if head else None
    try:
        with tied or nullcontext():
            yield model
    finally:
        for handle in handles:
            handle.remove()
