"""Generic builders: one per model kind, reading only the architecture config."""
from __future__ import annotations

from torch import nn

from zoo.architectures.decoder import Decoder
from zoo.architectures.encoder import Encoder
from zoo.architectures.encoder_decoder import EncoderDecoder
from zoo.config import Kind, KVLayout, ModelConfig


def build(model: ModelConfig, layout: KVLayout = KVLayout.btnh) -> nn.Module:
    """The entry's module with freshly initialised parameters (the checkpoint fills them next).

    `layout` is the decoder's KV-cache layout; the encoder-decoder's cache is always btnh (checked in validate).
    """
    builders = {
        Kind.decoder: lambda arch: Decoder(arch, layout),
        Kind.encoder_decoder: EncoderDecoder,
        Kind.encoder: Encoder,
    }
    return builders[Kind(model.kind)](model.arch).eval()
