"""Generic builders: one per model kind, reading only the architecture config."""
from __future__ import annotations

from torch import nn

from zoo.architectures.decoder import Decoder
from zoo.config import Kind, KVLayout, ModelConfig


def build(model: ModelConfig, layout: KVLayout = KVLayout.btnh) -> nn.Module:
    """The entry's module with freshly initialised parameters (the checkpoint fills them next)."""
    builders = {Kind.decoder: Decoder}
    return builders[Kind(model.kind)](model.arch, layout).eval()
