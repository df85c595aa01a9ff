"""Where the export reads weights from: a `WeightSource`, one fresh float32 array per read.

The model handed to the export may hold its parameters on the `meta` device (shapes and dtypes only: torch.export
and the lowering need no values, the weights are signature inputs); the values come from a source keyed by torch
state name, each read materializing a new array (e.g. a bf16 safetensors tensor widened), held only as long as the
export needs it. A plain dict of arrays is a source too (small models, tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class WeightSource(Protocol):
    """Weights by torch state name (`state_names`); `source[name]` reads one and returns a fresh array each time."""

    def __getitem__(self, name: str) -> np.ndarray: ...

    def __contains__(self, name: object) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...


def state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (non-persistent ones too) by torch state name: real or on `meta`."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return tensors


def state_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter and buffer of a module with real tensors, as numpy views (no copies): the eager source."""
    return {name: t.detach().numpy() for name, t in state_tensors(module).items()}


class ModuleWeights(Mapping[str, np.ndarray]):
    """The weights of `module` read from `weights` where it has them, else from the module's own (real) tensors,
    e.g. RoPE tables kept as buffers; a meta tensor that `weights` does not hold is an error at read time.

    `weights` is keyed by the state names of `inner` (a submodule of `module`, e.g. the decoder a signature's step
    wraps; default `module` itself), as the checkpoint names them."""

    def __init__(
        self,
        module: nn.Module,
        weights: WeightSource | Mapping[str, np.ndarray] | None = None,
        inner: nn.Module | None = None,
    ):
        self._tensors = state_tensors(module)
        self._weights = weights if weights is not None else {}
        self._prefix = ""
        if inner is not None and inner is not module:
            self._prefix = next(n for n, m in module.named_modules() if m is inner) + "."

    def __getitem__(self, name: str) -> np.ndarray:
        inner = name.removeprefix(self._prefix)
        if (inner != name or not self._prefix) and inner in self._weights:
            return self._weights[inner]
        tensor = self._tensors[name]
        if tensor.is_meta:
            raise KeyError(f"weight {name}: on the meta device and not in the weight source")
        return tensor.detach().numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def spec(self, name: str) -> torch.Tensor:
        """The module's tensor of that name (maybe meta): its shape and dtype, no data read."""
        return self._tensors[name]


@contextlib.contextmanager
def traceable(module: nn.Module) -> Iterator[None]:
    """`module`'s meta parameters temporarily replaced by uninitialised CPU tensors of their shapes, for
    torch.export: it traces with fake tensors and reads no value, but wants one device for parameters and inputs.
    The placeholders are never written, so their pages are never touched (no memory)."""
    saved = []
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_meta:
                saved.append((mod, name, p))
                mod._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=False)
    try:
        yield
    finally:
        for mod, name, p in saved:
            mod._parameters[name] = p
