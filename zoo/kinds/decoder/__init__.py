"""The decoder kind: a causal LM (zoo/architectures/decoder.py) exported as `prefill_{T}` + `decode` over a KV
cache, the signatures zoo's runtime, LiteRT-LM and the web bundle run."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from zoo.architectures.decoder import Decoder
from zoo.checkpoint import Weights
from zoo.errors import GateFailed
from zoo.golden import prompt_ids
from zoo.kinds.base import ModelKind, kv_cache_problems
from zoo.kinds.decoder.gate import DecoderGate, compare_to_golden, decoder_gate, greedy_answer, reference_arrays
from zoo.schema import ArchConfig, ExportConfig, ZooConfig


class DecoderKind(ModelKind):
    name = "decoder"
    components = {"lm_head": r"lm_head", "embedding": r"embed_tokens", "attention": r"self_attn", "mlp": r"mlp"}
    generates = True
    streams = True

    def problems(self, cfg: ZooConfig) -> list[str]:
        return [
            f"export: prefill length {prefill} must be in 1..kv_cache_max={cfg.export.kv_cache_max}"
            for prefill in cfg.export.prefill_lens
            if not 0 < prefill <= cfg.export.kv_cache_max
        ] + kv_cache_problems(cfg)

    def build(self, arch: ArchConfig, export: ExportConfig) -> nn.Module:
        return Decoder(arch, export.kv_layout, export.kv_read_multiple).eval()

    def golden_inputs(self, cfg: ZooConfig, tokenizer) -> list[list[int]]:
        return prompt_ids(cfg.golden, tokenizer, cfg.model.arch.vocab_size, cfg.seed, cfg.model.tokenizer.chat_template)

    def gate(
        self, model: nn.Module, weights: Weights, hf: nn.Module, inputs: list[list[int]], cfg: ZooConfig, tokenizer
    ) -> DecoderGate:
        kv_max = cfg.export.kv_cache_max
        longest = max(len(p) for p in inputs) + max(cfg.golden.new_tokens, cfg.golden.answer_tokens)
        if longest > kv_max:
            raise GateFailed(f"golden prompts need {longest} cache slots but export.kv_cache_max={kv_max}")
        result = decoder_gate(model, weights.get, hf, inputs, cfg.golden, kv_max)
        expect = cfg.model.expect_answer
        if not expect or tokenizer is None:
            return result
        answer = greedy_answer(model, weights.get, tokenizer, inputs[0], cfg.golden.answer_tokens, kv_max)
        return result.answered(answer, expect)

    def reference_arrays(self, hf: nn.Module, inputs: list[list[int]], cfg: ZooConfig) -> dict:
        return reference_arrays(hf, inputs, cfg.golden.new_tokens)

    def compare(self, model: nn.Module, arrays: dict, cfg: ZooConfig) -> dict:
        return compare_to_golden(model, arrays, cfg.export.kv_cache_max)

    def programs(self, model: nn.Module, cfg: ZooConfig) -> list:
        from zoo.kinds.decoder.programs import decoder_programs

        export = cfg.export
        return decoder_programs(
            model, export.kv_cache_max, list(export.prefill_lens), export.prefill_logits.value, export.mask_as_input
        )

    def check(
        self, path: Path, model: nn.Module, weights: Weights, gate: DecoderGate, cfg: ZooConfig
    ) -> tuple[dict[str, float], int]:
        from zoo.check import logit_metrics
        from zoo.export.simulate import roundings
        from zoo.kinds.decoder.check import run_check

        rounds = roundings(model, cfg.quant, self.components)
        logits = run_check(path, model, weights.get, list(gate.inputs[0]), cfg.export, cfg.threads, rounds)
        metrics = logit_metrics(logits["torch"], logits["tflite"])
        if "simulated" in logits:
            metrics["simulated_kl"] = logit_metrics(logits["torch"], logits["simulated"])["kl"]
        return metrics, len(logits["torch"])

    def debug_programs(self, model: nn.Module, inputs: list[list[int]], cfg: ZooConfig) -> list:
        from zoo.kinds.decoder.programs import decoder_debug_programs

        return decoder_debug_programs(model, inputs[0], cfg.export)

    def eval_figures(self, cfg: ZooConfig, path: Path, hf: nn.Module, text: str, tokenizer) -> dict:
        from zoo.eval.metrics import summarize
        from zoo.eval.text import tokens_of
        from zoo.kinds.decoder.eval import decoder_scores

        tokens = tokens_of(text, tokenizer)
        scores, windows = decoder_scores(cfg, path, hf, tokens)
        return {"text_tokens": len(tokens), "ctx": cfg.eval.ctx, "windows": windows, **summarize(scores)}
