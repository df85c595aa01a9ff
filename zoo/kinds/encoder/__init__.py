"""The encoder kind (BERT, zoo/architectures/encoder.py): `embed` of a fixed-length masked input into one pooled
sentence embedding; no cache, no vocabulary."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from zoo.architectures.encoder import Encoder
from zoo.checkpoint import Weights
from zoo.kinds.base import ModelKind, fixed_length_problems
from zoo.kinds.encoder.gate import EncoderGate, encoder_compare, encoder_gate, encoder_inputs, encoder_reference_arrays
from zoo.schema import ArchConfig, ExportConfig, ZooConfig


class EncoderKind(ModelKind):
    name = "encoder"
    components = {"embedding": r"word_embeddings"}

    def problems(self, cfg: ZooConfig) -> list[str]:
        return fixed_length_problems(cfg)

    def build(self, arch: ArchConfig, export: ExportConfig) -> nn.Module:
        return Encoder(arch).eval()

    def golden_inputs(self, cfg: ZooConfig, tokenizer) -> list[list[int]]:
        return encoder_inputs(cfg, tokenizer)

    def gate(
        self, model: nn.Module, weights: Weights, hf: nn.Module, inputs: list[list[int]], cfg: ZooConfig, tokenizer
    ) -> EncoderGate:
        return encoder_gate(model, hf, inputs, cfg)

    def reference_arrays(self, hf: nn.Module, inputs: list[list[int]], cfg: ZooConfig) -> dict:
        return encoder_reference_arrays(hf, inputs, cfg)

    def compare(self, model: nn.Module, arrays: dict, cfg: ZooConfig) -> dict:
        return encoder_compare(model, arrays, cfg)

    def programs(self, model: nn.Module, cfg: ZooConfig) -> list:
        from zoo.kinds.encoder.programs import encoder_programs

        return encoder_programs(model, cfg.export.encoder_len)

    def check(
        self, path: Path, model: nn.Module, weights: Weights, gate: EncoderGate, cfg: ZooConfig
    ) -> tuple[dict[str, float], int]:
        from zoo.kinds.encoder.check import run_encoder_check

        return run_encoder_check(path, model, gate, cfg)

    def debug_programs(self, model: nn.Module, inputs: list[list[int]], cfg: ZooConfig) -> list:
        from zoo.kinds.encoder.programs import encoder_debug_programs

        return encoder_debug_programs(model, inputs[0], cfg.export)

    def eval_figures(self, cfg: ZooConfig, path: Path, hf: nn.Module, text: str, tokenizer) -> dict:
        from zoo.kinds.encoder.eval import encoder_figures

        ctx = min(cfg.eval.ctx, cfg.export.encoder_len, cfg.export.kv_cache_max)
        return {"text_tokens": 0, "ctx": ctx, **encoder_figures(cfg, path, hf, text, tokenizer)}
