"""The LiteRT signatures of a decoder: `prefill_{T}` per prefill length and `decode` (T=1), each a torch.export'ed
step with flat, conventionally named inputs and outputs, then lowered to a TF concrete function. Encoder kinds'
`Program`s: T5 `encode` + `decode`, BERT `embed`.

Names follow what MediaPipe / LiteRT-LM look for: inputs `tokens` [1,T] int32, `input_pos` [T] int32,
`kv_cache_k_{i}` / `kv_cache_v_{i}`, optional `mask` [1,1,T,kv_max]; outputs `logits` and the updated caches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import tensorflow as tf
import torch
from torch import nn
from torch.export import ExportedProgram

from zoo.export.lower import lower, tf_dtype, used_weights
from zoo.export.weights import traceable

Logits = Literal["none", "last", "all"]


@dataclass(frozen=True)
class Signature:
    name: str
    length: int  # T, tokens per call
    logits: Logits


def plan(prefill_lens: Sequence[int], prefill_logits: Logits) -> list[Signature]:
    """Prefill signatures in the given order, then decode (which always returns the logits of its one token)."""
    prefills = [Signature(f"prefill_{t}", t, prefill_logits) for t in prefill_lens]
    return [*prefills, Signature("decode", 1, "all")]


class Step(nn.Module):
    """One signature's computation over the decoder, with flat cache inputs and outputs for torch.export."""

    def __init__(self, decoder: nn.Module, logits: Logits):
        super().__init__()
        self.decoder, self.logits = decoder, logits

    @property
    def model(self) -> nn.Module:
        """The decoder, under the name every kind's step gives its model (its module path stays `decoder`)."""
        return self.decoder

    def forward(self, tokens, input_pos, caches: list[torch.Tensor], mask=None) -> tuple[torch.Tensor, ...]:
        kv = list(zip(caches[0::2], caches[1::2]))
        hidden, kv = self.decoder.hidden(tokens, input_pos, kv, mask)
        flat = tuple(t for pair in kv for t in pair)
        if self.logits == "none":
            return flat
        if self.logits == "last":
            hidden = hidden[:, -1:]  # only the last position is projected to the vocabulary
        return (self.decoder.logits(hidden), *flat)


def io_names(num_layers: int, logits: Logits, mask_as_input: bool) -> tuple[list[str], list[str]]:
    caches = [f"kv_cache_{kind}_{i}" for i in range(num_layers) for kind in ("k", "v")]
    inputs = ["tokens", "input_pos", *caches] + (["mask"] if mask_as_input else [])
    return inputs, ([] if logits == "none" else ["logits"]) + caches


def input_specs(program: ExportedProgram, names: Sequence[str]) -> list[tf.TensorSpec]:
    """TF specs of the program's user inputs (int64 as int32), named by convention."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    values = [placeholders[u].meta["val"] for u in users]
    return [tf.TensorSpec(list(v.shape), tf_dtype(v.dtype), name=n) for v, n in zip(values, names, strict=True)]


def tf_signature(
    program: ExportedProgram,
    weights: Mapping[str, torch.Tensor],
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> Callable[..., dict[str, tf.Tensor]]:
    """The lowered program as a concrete function with named inputs and a dict of named outputs.

    Every parameter and buffer it reads is an input too, named by torch state name: the converter then never holds
    weight values, which zoo/export/bake.py puts in as shared constants afterwards. `weights` gives only shapes
    and dtypes (meta tensors will do).
    """
    used = used_weights(program)
    weights = {name: t for name, t in weights.items() if name in used}
    specs = input_specs(program, inputs) + [
        tf.TensorSpec(list(t.shape), tf_dtype(t.dtype), name=name) for name, t in weights.items()
    ]

    @tf.function(input_signature=specs, autograph=False)
    def fn(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        state = dict(zip(weights, args[len(inputs) :], strict=True))
        return dict(zip(outputs, lower(program, state)(*args[: len(inputs)]), strict=True))

    return fn.get_concrete_function()


@dataclass(frozen=True)
class Program:
    """One signature of a kind: a step over the model (reachable as `.model`, so every signature names a weight the
    same), example inputs of its static shapes, and the conventional names of its flat inputs and outputs."""

    name: str
    step: nn.Module
    args: tuple
    inputs: list[str]
    outputs: list[str]


def kv_pairs(flat: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(flat[0::2], flat[1::2]))


class Encode(nn.Module):
    """tokens, attention_mask [1, S] -> encoder states and every decoder layer's cross-attention K, V."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, attention_mask) -> tuple[torch.Tensor, ...]:
        states = self.model.encode(tokens, attention_mask)
        return (states, *(t for pair in self.model.cross_kv(states) for t in pair))


def layer_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]


def export_program(program: Program) -> ExportedProgram:
    with torch.no_grad(), traceable(program.step):
        return torch.export.export(program.step, program.args, strict=False)
