"""Modules whose parameters live on the meta device and are read from a source only while they are needed, so a
model of any size runs in the memory of its largest block: the gate's and the check's way to run full-size models.

`reading(module, source)` fills a block's parameters for the duration of a `with`; `streamed(model, source)` hooks
every module with parameters of its own so each reads them just before it runs and drops them right after (what
runs transformers' own classes, whose forward we do not control). Parameters are read as float64 (the gate's
precision, zoo/exact.py) except tables larger than exact.WIDEN_BLOCK, kept in the checkpoint's own float dtype
(bf16: Gemma's 256k-row table is 1 GB, not 2 in float32 or 4 in float64) and widened by the rows used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from zoo import exact

# full parameter name, float dtype (None: the checkpoint's own) -> its tensor, read now
Source = Callable[[str, torch.dtype | None], torch.Tensor]


def is_streamed(model: nn.Module) -> bool:
    """Whether the model's parameters are on the meta device (read on use) rather than in memory."""
    return any(p.is_meta for p in model.parameters())


def _read(source: Source, name: str, like: torch.Tensor) -> torch.Tensor:
    """Parameter `name` (shaped like the meta tensor `like`), float64 unless too large to widen whole (then as
    stored)."""
    with exact.paused():
        return source(name, torch.float64 if like.numel() <= exact.WIDEN_BLOCK else None)


@contextmanager
def reading(module: nn.Module, source: Source, prefix: str = "", recurse: bool = True) -> Iterator[nn.Module]:
    """`module`'s meta parameters (named `prefix` + their name) read from `source` for the block, meta again after."""
    saved = []
    modules = module.named_modules(prefix=prefix.rstrip(".")) if recurse else [(prefix.rstrip("."), module)]
    for name, sub in modules:
        for key, param in list(sub._parameters.items()):
            if param is not None and param.is_meta:
                saved.append((sub, key, param))
                full = f"{name}.{key}" if name else key
                sub._parameters[key] = nn.Parameter(_read(source, full, param), requires_grad=False)
    try:
        yield module
    finally:
        for sub, key, param in saved:
            sub._parameters[key] = param


@contextmanager
def streamed(model: nn.Module, source: Source) -> Iterator[nn.Module]:
    """Every module of `model` with meta parameters of its own reads them as it runs (forward hooks)."""
    handles, open_blocks = [], {}
    for name, sub in model.named_modules():
        if not any(p is not None and p.is_meta for p in sub._parameters.values()):
            continue

        def pre(module, args, name=name):
            block = reading(module, source, name, recurse=False)
            block.__enter__()
            open_blocks[id(module)] = block

        def post(module, args, output):
            open_blocks.pop(id(module)).__exit__(None, None, None)

        handles += [sub.register_forward_pre_hook(pre), sub.register_forward_hook(post)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for block in open_blocks.values():  # a forward that raised half-way
            block.__exit__(None, None, None)
