"""The encoder's programs: the `embed` signature it exports and the finder's call of it (zoo/export/signatures.py:
the kind-neutral Program)."""

from __future__ import annotations

import torch
from torch import nn

from zoo.check import padded
from zoo.export.signatures import Program
from zoo.schema import ExportConfig


def encoder_debug_programs(model: nn.Module, prompt: list[int], export: ExportConfig) -> list[Program]:
    """`embed` of the first golden input (padded, masked)."""
    feed = padded(prompt, export.encoder_len)
    (embed,) = encoder_programs(model, export.encoder_len)
    args = (torch.from_numpy(feed["tokens"]).long(), torch.from_numpy(feed["attention_mask"]).long())
    return [Program(embed.name, embed.step, args, embed.inputs, embed.outputs)]


class Embed(nn.Module):
    """tokens, attention_mask [1, S] -> pooled (normalised, per the entry) sentence embedding [1, dim]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, attention_mask) -> torch.Tensor:
        return self.model(tokens, attention_mask)


def encoder_programs(model: nn.Module, encoder_len: int) -> list[Program]:
    """`embed`: one sentence padded to encoder_len, with its attention mask."""
    tokens, mask = torch.zeros(1, encoder_len, dtype=torch.int64), torch.ones(1, encoder_len, dtype=torch.int64)
    return [Program("embed", Embed(model), (tokens, mask), ["tokens", "attention_mask"], ["embedding"])]
