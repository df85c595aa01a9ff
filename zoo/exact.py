"""Float64 evaluation of float32 models, for comparisons that must not depend on float32 rounding.

Two float32 computations of the same model agree only to float32's reordering error, and on SmolLM2 (residual
channels in the thousands) that error reaches ~5e-3 in a logit: CPU GEMM kernels pick their blocking by memory
alignment and load, so the same call can round differently from one run to the next. In float64 the same
reordering moves a logit by ~1e-12, so a fixed tolerance far below any real fault holds on every machine and run.

`float64(*modules)` runs models in float64 without changing them: a torch function mode widens each float32 (or
bf16 / fp16) tensor an op receives and every such dtype an op asks for (`.float()`, `.to(torch.float32)`,
`softmax(dtype=torch.float32)`: transformers' upcasts in norms, softmax and RoPE), and makes float64 the default
dtype for the tensors the models create. The modules' weights are widened once up front while they fit a memory
budget (a third of the available memory), the rest on each use, so a model too large to copy still runs, only
slower. A table too large to widen whole (a 256k-token vocabulary) is widened by the rows an embedding lookup
gathers and, as a linear layer's weight (a tied lm_head), in blocks of rows; both give the same numbers as widening
it whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# Elements of a float32 weight widened in blocks rather than whole (64M: 512 MiB in float64).
WIDEN_BLOCK = 1 << 26
# Float dtypes widened: float32, and the bf16 / fp16 a streamed table keeps from its checkpoint (zoo/stream.py).
NARROW = (torch.float32, torch.bfloat16, torch.float16)
# Calls that read a tensor's metadata (`t.dtype`, `t.shape`: a property's __get__): run on the tensor as it is, or a
# 256k-row table would be widened whole just to be asked its dtype.
METADATA = {"__get__", "data_ptr", "numel", "size", "dim", "stride", "storage_offset", "is_floating_point"}
_paused = [False]


def _key(t: torch.Tensor) -> tuple:
    return t.data_ptr(), tuple(t.shape), t.stride()


def _in_place(name: str) -> bool:
    """`x.add_(y)`, `x[i] = y`, `x += y`: ops whose first argument is written."""
    augmented = name.startswith("__i") and name not in ("__index__", "__int__", "__invert__", "__init__")
    return name == "__setitem__" or augmented or (name.endswith("_") and not name.endswith("__"))


class _Float64(TorchFunctionMode):
    def __init__(self, widened: dict[tuple, torch.Tensor]):
        super().__init__()
        self.widened = widened

    def widen(self, value):
        if _narrow(value):
            done = self.widened.get(_key(value))
            return done if done is not None else value.double()
        if isinstance(value, torch.dtype) and value in NARROW:
            return torch.float64
        if isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, torch.dtype)) for v in value):
            return type(value)(self.widen(v) for v in value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _paused[0] or getattr(func, "__name__", "") in METADATA:
            return func(*args, **kwargs)
        if func is F.embedding and _narrow(args[1] if len(args) > 1 else kwargs.get("weight")):
            return func(*args, **kwargs).double()  # the rows gathered, then widened
        weight = (args[1] if len(args) > 1 else kwargs.get("weight")) if func is F.linear else None
        if _narrow(weight) and weight.numel() > WIDEN_BLOCK and _key(weight) not in self.widened:
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            return _linear_in_blocks(self.widen(args[0] if args else kwargs["input"]), weight, bias)
        kwargs = {k: self.widen(v) for k, v in kwargs.items()}
        if func is torch.Tensor.float:
            func = torch.Tensor.double
        if _in_place(getattr(func, "__name__", "")) and args:  # the tensor written stays itself
            return func(args[0], *(self.widen(a) for a in args[1:]), **kwargs)
        return func(*(self.widen(a) for a in args), **kwargs)


def _narrow(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in NARROW


def _linear_in_blocks(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    rows = max(1, WIDEN_BLOCK // weight.shape[1])
    parts = []
    for start in range(0, weight.shape[0], rows):
        part = bias[start : start + rows].double() if bias is not None else None
        parts.append(F.linear(x, weight[start : start + rows].double(), part))
    return torch.cat(parts, dim=-1)


@contextmanager
def paused() -> Iterator[None]:
    """Torch calls inside run as written (reading a checkpoint tensor as float32 inside a float64 forward)."""
    before, _paused[0] = _paused[0], True
    try:
        yield
    finally:
        _paused[0] = before


@contextmanager
def float64(*modules: nn.Module) -> Iterator[None]:
    """Run the enclosed forward passes in float64 (results come out float64); `modules` are widened up front."""
    budget, widened = psutil.virtual_memory().available // 3, {}
    with torch.no_grad():
        for t in itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in modules):
            if (
                t.dtype == torch.float32
                and t.device.type == "cpu"
                and _key(t) not in widened
                and budget >= 2 * t.nbytes
            ):
                widened[_key(t)], budget = t.detach().double(), budget - 2 * t.nbytes
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with _Float64(widened):
            yield
    finally:
        torch.set_default_dtype(default)
