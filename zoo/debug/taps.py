"""PyTorch side of the finder: every module's output during one signature's step, recorded by forward hooks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from zoo.exact import float64


def _first_tensor(value) -> torch.Tensor | None:
    """A module's output tensor: itself, or the first of a tuple (a layer returns its hidden state, then caches);
    None for a tuple of alike tensors (RoPE's cos, sin), whose ops could not be told apart by shape."""
    if isinstance(value, (tuple, list)) and value:
        first, rest = value[0], value[1:]
        if any(isinstance(t, torch.Tensor) and t.shape == getattr(first, "shape", None) for t in rest):
            return None
        value = first
    return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None


def flat_args(args: Sequence) -> list[np.ndarray]:
    """A step's arguments flattened as its signature takes them (a list of caches is one input per tensor), in the
    flatbuffer's dtypes (int64 as int32, float as float32)."""
    flat = []
    for arg in args:
        for t in arg if isinstance(arg, (list, tuple)) else [arg]:
            if t is None:
                continue
            a = t.detach().numpy()
            flat.append(a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int32))
    return flat


@torch.no_grad()
def module_outputs(step: nn.Module, args: Sequence) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Each module's output by its path in `step` (the TF name scope the lowering gave its ops), in the order the
    modules finished, and the step's own outputs; run in float64 (zoo/exact.py) so the reference is not float32's
    rounding. A module called twice keeps its last output (its ops share one scope too)."""
    outputs: dict[str, np.ndarray] = {}

    def hook(path: str):
        def record(_module, _inputs, value):
            tensor = _first_tensor(value)
            if tensor is not None:
                outputs.pop(path, None)  # re-inserted: the order is the order of the last call
                outputs[path] = tensor.detach().double().numpy()

        return record

    handles = [m.register_forward_hook(hook(path)) for path, m in step.named_modules() if path]
    try:
        with float64(step):
            result = step(*args)
    finally:
        for handle in handles:
            handle.remove()
    flat = [result] if isinstance(result, torch.Tensor) else list(result)
    return outputs, [t.detach().double().numpy() for t in flat]
