"""The decoder's programs: the `prefill_{T}` and `decode` signatures it exports, and the finder's calls of them
(zoo/debug/), each a `Program` whose `args` are the real inputs of one call, so the step module (whose module
paths are the flatbuffer's name scopes) and the signature get exactly the same values."""

from __future__ import annotations

import torch
from torch import nn

from zoo.architectures.layers import attention_mask
from zoo.export.signatures import Logits, Program, Step, io_names, plan
from zoo.kinds.decoder.check import prefill_length
from zoo.schema import ExportConfig


def decoder_programs(
    model: nn.Module, kv_cache_max: int, prefill_lens: list[int], prefill_logits: Logits, mask_as_input: bool
) -> list[Program]:
    """`prefill_{T}` for each length, then `decode`, on example inputs of their static shapes (zeros, an empty
    cache; the mask input last with `mask_as_input`)."""
    layers, programs = model.arch.num_layers, []
    for signature in plan(prefill_lens, prefill_logits):
        t = signature.length
        caches = [c for pair in model.empty_cache(kv_cache_max) for c in pair]
        mask = (torch.zeros(1, 1, t, kv_cache_max),) if mask_as_input else ()
        args = (torch.zeros(1, t, dtype=torch.int64), torch.arange(t), caches, *mask)
        step = Step(model, signature.logits)
        programs.append(Program(signature.name, step, args, *io_names(layers, signature.logits, mask_as_input)))
    return programs


def _mask(positions: torch.Tensor, export: ExportConfig) -> torch.Tensor | None:
    """The `mask` input of an export with `export.mask_as_input`, as the check makes it."""
    if not export.mask_as_input:
        return None
    return attention_mask(positions, torch.arange(export.kv_cache_max), None).float()


@torch.no_grad()
def decoder_debug_programs(model: nn.Module, prompt: list[int], export: ExportConfig) -> list[Program]:
    """The prefill signature over the check prompt (all but its last token) repeated to the signature's length,
    from an empty cache, then one decode step of its last token after it over the cache PyTorch's prefill wrote.
    Every prefill position holds a real token (the check pads with id 0, whose positions no output uses but whose
    hidden states would weigh in every figure here); both sides read the same cache, so the decode figures are the
    decode step's own."""
    t = prefill_length(len(prompt), list(export.prefill_lens))
    body = prompt[:-1]
    tokens = torch.tensor([(body * (t // len(body) + 1))[:t]])
    caches = [c for pair in model.empty_cache(export.kv_cache_max) for c in pair]
    mask = _mask(torch.arange(t), export)
    layers, logits = model.arch.num_layers, export.prefill_logits.value
    prefill = Step(model, logits)
    args = (tokens, torch.arange(t), caches, mask)
    filled = list(prefill(*args)[0 if logits == "none" else 1 :])
    pos = min(t, export.kv_cache_max - 1)
    return [
        Program(f"prefill_{t}", prefill, args, *io_names(layers, logits, export.mask_as_input)),
        Program(
            "decode",
            Step(model, "all"),
            (torch.tensor([[prompt[-1]]]), torch.tensor([pos]), filled, _mask(torch.tensor([pos]), export)),
            *io_names(layers, "all", export.mask_as_input),
        ),
    ]
