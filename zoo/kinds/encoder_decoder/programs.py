"""The encoder-decoder's programs: the `encode` and `decode` signatures it exports and the finder's calls of
them (zoo/export/signatures.py: the kind-neutral Program)."""

from __future__ import annotations

import torch
from torch import nn

from zoo.check import padded
from zoo.export.signatures import Encode, Program, kv_pairs, layer_names
from zoo.export.weights import traceable
from zoo.schema import ExportConfig


@torch.no_grad()
def seq2seq_debug_programs(model: nn.Module, prompt: list[int], export: ExportConfig) -> list[Program]:
    """`encode` of the check prompt (padded, masked), then the first `decode` step over the cross K/V that
    PyTorch's encode computed."""
    feed = padded(prompt, export.encoder_len)
    tokens, mask = torch.from_numpy(feed["tokens"]).long(), torch.from_numpy(feed["attention_mask"]).long()
    encode, decode = seq2seq_programs(model, export.encoder_len, export.kv_cache_max)
    cross = list(encode.step(tokens, mask)[1:])
    caches = [c for pair in model.empty_cache(export.kv_cache_max) for c in pair]
    start = torch.tensor([[model.arch.decoder_start_token]])
    return [
        Program(encode.name, encode.step, (tokens, mask), encode.inputs, encode.outputs),
        Program(
            decode.name, decode.step, (start, torch.tensor([0]), caches, cross, mask), decode.inputs, decode.outputs
        ),
    ]


class Seq2SeqDecode(nn.Module):
    """One decoder token over the self-attention cache and the precomputed cross K/V -> logits, updated cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, input_pos, caches: list[torch.Tensor], cross: list[torch.Tensor], attention_mask):
        logits, kv = self.model(tokens, input_pos, kv_pairs(caches), kv_pairs(cross), attention_mask)
        return (logits, *(t for pair in kv for t in pair))


def seq2seq_programs(model: nn.Module, encoder_len: int, kv_cache_max: int) -> list[Program]:
    """`encode` and `decode`. Decode takes the cross-attention K/V that encode computed once, so a step projects
    only its own token: no per-step K/V projection of all encoder states."""
    layers = model.arch.num_layers
    tokens, mask = torch.zeros(1, encoder_len, dtype=torch.int64), torch.ones(1, encoder_len, dtype=torch.int64)
    caches = [c for pair in model.empty_cache(kv_cache_max) for c in pair]
    with torch.no_grad(), traceable(model):  # example values of the right shapes (a meta model's are garbage)
        cross = list(Encode(model)(tokens, mask)[1:])
    cache, cross_names = layer_names("kv_cache", layers), layer_names("cross", layers)
    return [
        Program(
            "encode", Encode(model), (tokens, mask), ["tokens", "attention_mask"], ["encoder_states", *cross_names]
        ),
        Program(
            "decode",
            Seq2SeqDecode(model),
            (torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), caches, cross, mask),
            ["tokens", "input_pos", *cache, *cross_names, "attention_mask"],
            ["logits", *cache],
        ),
    ]
