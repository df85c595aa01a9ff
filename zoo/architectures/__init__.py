"""Generic builders: one per model kind, reading only the architecture config."""
from __future__ import annotations

from torch import nn

from zoo.architectures.decoder import Decoder
from zoo.architectures.encoder import Encoder
from zoo.architectures.encoder_decoder import EncoderDecoder
from zoo.config import Kind, KVLayout, ModelConfig


def build(model: ModelConfig, layout: KVLayout = KVLayout.btnh, read_multiple: int = 0) -> nn.Module:
    """The entry's module with freshly initialised parameters (the checkpoint fills them next).

    `layout` is the decoder's KV-cache layout; the encoder-decoder's cache is always btnh (checked in validate).
    Attention over a KV cache reads the filled slots rounded up to `read_multiple` (0: all; layers.filled_slots).
    """
    builders = {
        Kind.decoder: lambda arch: Decoder(arch, layout, read_multiple),
        Kind.encoder_decoder: lambda arch: EncoderDecoder(arch, read_multiple),
        Kind.encoder: Encoder,
    }
    return builders[Kind(model.kind)](model.arch).eval()
