"""The encoder-decoder kind (T5, zoo/architectures/encoder_decoder.py): `encode` of a fixed-length masked input
into encoder states and every layer's cross-attention K/V, then `decode` steps over a self-attention cache."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from zoo.architectures.encoder_decoder import EncoderDecoder
from zoo.checkpoint import Weights
from zoo.golden import prompt_ids
from zoo.kinds.base import ModelKind, fixed_length_problems, kv_cache_problems
from zoo.kinds.encoder_decoder.gate import Seq2SeqGate, seq2seq_compare, seq2seq_gate, seq2seq_reference_arrays
from zoo.schema import ArchConfig, ExportConfig, ZooConfig


class EncoderDecoderKind(ModelKind):
    name = "encoder_decoder"
    components = {"lm_head": r"lm_head", "embedding": r"\bshared\b"}

    def problems(self, cfg: ZooConfig) -> list[str]:
        return fixed_length_problems(cfg) + kv_cache_problems(cfg)  # its cache is always btnh

    def build(self, arch: ArchConfig, export: ExportConfig) -> nn.Module:
        return EncoderDecoder(arch, export.kv_read_multiple).eval()

    def golden_inputs(self, cfg: ZooConfig, tokenizer) -> list[list[int]]:
        return prompt_ids(cfg.golden, tokenizer, cfg.model.arch.vocab_size, cfg.seed, False)

    def gate(
        self, model: nn.Module, weights: Weights, hf: nn.Module, inputs: list[list[int]], cfg: ZooConfig, tokenizer
    ) -> Seq2SeqGate:
        return seq2seq_gate(model, hf, inputs, cfg)

    def reference_arrays(self, hf: nn.Module, inputs: list[list[int]], cfg: ZooConfig) -> dict:
        return seq2seq_reference_arrays(hf, inputs, cfg)

    def compare(self, model: nn.Module, arrays: dict, cfg: ZooConfig) -> dict:
        return seq2seq_compare(model, arrays, cfg)

    def programs(self, model: nn.Module, cfg: ZooConfig) -> list:
        from zoo.kinds.encoder_decoder.programs import seq2seq_programs

        return seq2seq_programs(model, cfg.export.encoder_len, cfg.export.kv_cache_max)

    def check(
        self, path: Path, model: nn.Module, weights: Weights, gate: Seq2SeqGate, cfg: ZooConfig
    ) -> tuple[dict[str, float], int]:
        from zoo.export.simulate import roundings
        from zoo.kinds.encoder_decoder.check import run_seq2seq_check

        return run_seq2seq_check(path, model, gate, cfg, roundings(model, cfg.quant, self.components))

    def debug_programs(self, model: nn.Module, inputs: list[list[int]], cfg: ZooConfig) -> list:
        from zoo.kinds.encoder_decoder.programs import seq2seq_debug_programs

        return seq2seq_debug_programs(model, inputs[0], cfg.export)

    def eval_figures(self, cfg: ZooConfig, path: Path, hf: nn.Module, text: str, tokenizer) -> dict:
        from zoo.eval.metrics import summarize
        from zoo.eval.text import tokens_of
        from zoo.kinds.encoder_decoder.eval import seq2seq_scores

        tokens = tokens_of(text, tokenizer)
        scores, windows = seq2seq_scores(cfg, path, hf, tokens)
        ctx = min(cfg.eval.ctx, cfg.export.encoder_len, cfg.export.kv_cache_max)
        return {"text_tokens": len(tokens), "ctx": ctx, "windows": windows, **summarize(scores)}
