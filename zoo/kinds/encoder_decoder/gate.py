"""The encoder-decoder's golden gate (T5): encoder states, teacher-forced decoder logits, greedy tokens and our
cached decode steps against transformers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from zoo.golden import TOP_K, GateFigures, GateResult, golden_positions, worst_at
from zoo.schema import ZooConfig


def decoder_inputs(cfg: ZooConfig, count: int) -> list[list[int]]:
    """Teacher-forced decoder inputs per prompt: the start token, then seeded random ids (new_tokens in all)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start, vocab = cfg.model.arch.decoder_start_token, cfg.model.arch.vocab_size
    return [[start, *torch.randint(vocab, (cfg.golden.new_tokens - 1,), generator=gen).tolist()] for _ in range(count)]


@torch.no_grad()
def reference_seq2seq(hf: nn.Module, ids: list[int], decoder_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' encoder states [S, dim] and teacher-forced decoder logits [T, V]."""
    out = hf(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder_ids]))
    return out.encoder_last_hidden_state[0].float(), out.logits[0].float()


@torch.no_grad()
def reference_seq2seq_greedy(hf: nn.Module, ids: list[int], start: int, new_tokens: int) -> list[int]:
    """Greedy decoder tokens by full recompute of encoder and decoder: nothing of the reference's cache is trusted."""
    seq = [start]
    for _ in range(new_tokens):
        seq.append(int(reference_seq2seq(hf, ids, seq)[1][-1].argmax()))
    return seq[1:]


@torch.no_grad()
def our_seq2seq(model: nn.Module, ids: list[int], decoder_ids: list[int], kv_max: int):
    """Our encoder states [S, dim] and decoder logits [T, V], all decoder inputs in one call."""
    mask = torch.ones(1, len(ids), dtype=torch.int64)
    states = model.encode(torch.tensor([ids]), mask)
    logits, _ = model(
        torch.tensor([decoder_ids]),
        torch.arange(len(decoder_ids)),
        model.empty_cache(kv_max),
        model.cross_kv(states),
        mask,
    )
    return states[0], logits[0]


@torch.no_grad()
def our_seq2seq_steps(
    model: nn.Module, ids: list[int], decoder_ids: list[int] | None, start: int, steps: int, kv_max: int
) -> tuple[list[int], torch.Tensor]:
    """One decoder token per call through the cache, as the `decode` signature runs: teacher-forced by decoder_ids,
    or greedy from `start` when None. Returns the argmax tokens and the logits [steps, V]."""
    mask = torch.ones(1, len(ids), dtype=torch.int64)
    cross = model.cross_kv(model.encode(torch.tensor([ids]), mask))
    cache, token, tokens, rows = model.empty_cache(kv_max), start, [], []
    for pos in range(steps):
        token = decoder_ids[pos] if decoder_ids is not None else token
        logits, cache = model(torch.tensor([[token]]), torch.tensor([pos]), cache, cross, mask)
        rows.append(logits[0, -1])
        token = int(logits[0, -1].argmax())
        tokens.append(token)
    return tokens, torch.stack(rows)


@dataclass(frozen=True)
class Seq2SeqGate(GateResult):
    """The encoder-decoder's verdict, with transformers' greedy tokens for the first prompt: what the flatbuffer's
    own greedy generation must give (zoo/kinds/encoder_decoder/check.py)."""

    reference_greedy: tuple[int, ...] = ()

    def summary(self) -> str:
        f, worst = self.figures, self.figures.worst
        return (
            f"max |diff| {f.max_abs_diff:.2e} (atol {f.atol:.0e}; worst in {worst.get('output')} of "
            f"prompt {worst.get('prompt')} position {worst.get('position')}), greedy seq2seq "
            f"{f.greedy_equal}/{f.greedy_total}, cached decode vs one call "
            f"{f.decode_vs_full_max_abs_diff:.2e} (atol {f.decode_atol:.0e})"
        )

    def to_report(self) -> dict:
        return {**super().to_report(), "summary": self.summary(), "reference_greedy": list(self.reference_greedy)}


def seq2seq_gate(model: nn.Module, hf: nn.Module, prompts: list[list[int]], cfg: ZooConfig) -> Seq2SeqGate:
    """Encoder states and teacher-forced logits vs transformers, greedy tokens, our cached decode vs one call."""
    golden, kv_max, start = cfg.golden, cfg.export.kv_cache_max, cfg.model.arch.decoder_start_token
    result, first_greedy = GateFigures(atol=golden.atol, decode_atol=golden.decode_atol), []
    for p, (ids, dec) in enumerate(zip(prompts, decoder_inputs(cfg, len(prompts)))):
        ref_states, ref_logits = reference_seq2seq(hf, ids, dec)
        states, logits = our_seq2seq(model, ids, dec, kv_max)
        worst_at(result, (states - ref_states).abs(), states, ref_states, prompt=p, output="encoder_states")
        worst_at(result, (logits - ref_logits).abs(), logits, ref_logits, prompt=p, output="decoder_logits")
        _, stepwise = our_seq2seq_steps(model, ids, dec, start, len(dec), kv_max)
        result.decode_vs_full_max_abs_diff = max(
            result.decode_vs_full_max_abs_diff, float((stepwise - logits).abs().max())
        )
        ref_tokens = reference_seq2seq_greedy(hf, ids, start, golden.new_tokens)
        our_tokens, _ = our_seq2seq_steps(model, ids, None, start, golden.new_tokens, kv_max)
        result.greedy_equal += sum(a == b for a, b in zip(ref_tokens, our_tokens))
        result.greedy_total += len(ref_tokens)
        if p == 0:
            first_greedy = ref_tokens
    return Seq2SeqGate(result, tuple(prompts), tuple(first_greedy))


def seq2seq_reference_arrays(hf: nn.Module, prompts: list[list[int]], cfg: ZooConfig) -> dict[str, np.ndarray]:
    """From transformers only: ids, encoder states, top-k teacher-forced logits at a few positions, greedy tokens."""
    arrays = {}
    for p, (ids, dec) in enumerate(zip(prompts, decoder_inputs(cfg, len(prompts)))):
        states, logits = reference_seq2seq(hf, ids, dec)
        positions = golden_positions(len(dec))
        top = logits[positions].topk(TOP_K, dim=-1)
        arrays[f"p{p}_ids"] = np.array(ids, dtype=np.int64)
        arrays[f"p{p}_decoder_ids"] = np.array(dec, dtype=np.int64)
        arrays[f"p{p}_states_value"] = states.numpy()
        arrays[f"p{p}_positions"] = np.array(positions, dtype=np.int64)
        arrays[f"p{p}_topk_index"] = top.indices.numpy().astype(np.int64)
        arrays[f"p{p}_topk_value"] = top.values.numpy()
        greedy = reference_seq2seq_greedy(hf, ids, cfg.model.arch.decoder_start_token, cfg.golden.new_tokens)
        arrays[f"p{p}_greedy"] = np.array(greedy, dtype=np.int64)
    return arrays


def seq2seq_compare(model: nn.Module, arrays: dict[str, np.ndarray], cfg: ZooConfig) -> dict:
    max_diff, greedy_equal, greedy_total = 0.0, 0, 0
    kv_max, start = cfg.export.kv_cache_max, cfg.model.arch.decoder_start_token
    for p in range(len([k for k in arrays if k.endswith("_decoder_ids")])):
        ids, dec = arrays[f"p{p}_ids"].tolist(), arrays[f"p{p}_decoder_ids"].tolist()
        states, logits = our_seq2seq(model, ids, dec, kv_max)
        picked = logits[torch.from_numpy(arrays[f"p{p}_positions"])].gather(
            -1, torch.from_numpy(arrays[f"p{p}_topk_index"])
        )
        max_diff = max(
            max_diff,
            float((picked - torch.from_numpy(arrays[f"p{p}_topk_value"])).abs().max()),
            float((states - torch.from_numpy(arrays[f"p{p}_states_value"])).abs().max()),
        )
        greedy = arrays[f"p{p}_greedy"].tolist()
        ours, _ = our_seq2seq_steps(model, ids, None, start, len(greedy), kv_max)
        greedy_equal += sum(a == b for a, b in zip(ours, greedy))
        greedy_total += len(greedy)
    return {"max_abs_diff": max_diff, "greedy_equal": greedy_equal, "greedy_total": greedy_total}
