"""The decoder's golden gate: our decoder against its transformers class, layer by layer, then the logits at every
prompt position, the greedy tokens and our cached calls against our full forward (zoo/golden.py: the kind-neutral
parts)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from zoo.errors import GateFailed
from zoo.golden import TOP_K, GateFigures, GateResult, golden_positions, worst_at
from zoo.schema import GoldenConfig
from zoo.stream import Source, is_streamed, reading, streamed


@torch.no_grad()
def reference_logits(hf: nn.Module, ids: list[int]) -> torch.Tensor:
    return hf(torch.tensor([ids])).logits[0].float()


@torch.no_grad()
def reference_greedy(hf: nn.Module, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation by full recompute: no cache, so nothing of the reference's cache logic is trusted."""
    seq = list(ids)
    for _ in range(new_tokens):
        seq.append(int(reference_logits(hf, seq)[-1].argmax()))
    return seq[len(ids) :]


@torch.no_grad()
def our_prefill(model: nn.Module, ids: list[int], kv_max: int):
    logits, cache = model(torch.tensor([ids]), torch.arange(len(ids)), model.empty_cache(kv_max))
    return logits[0], cache


@torch.no_grad()
def our_stepwise(model: nn.Module, ids: list[int], kv_max: int) -> torch.Tensor:
    """Logits of the prompt fed one token at a time through the cache (what a decode signature does)."""
    cache, rows = model.empty_cache(kv_max), []
    for pos, token in enumerate(ids):
        logits, cache = model(torch.tensor([[token]]), torch.tensor([pos]), cache)
        rows.append(logits[0, -1])
    return torch.stack(rows)


@torch.no_grad()
def our_greedy(model: nn.Module, ids: list[int], new_tokens: int, kv_max: int) -> list[int]:
    logits, cache = our_prefill(model, ids, kv_max)
    out = [int(logits[-1].argmax())]
    for step in range(new_tokens - 1):
        pos = len(ids) + step
        logits, cache = model(torch.tensor([[out[-1]]]), torch.tensor([pos]), cache)
        out.append(int(logits[0, -1].argmax()))
    return out


@dataclass
class Run:
    """One sequence through a decoder: logits at every position [T, V] and the hidden states [T, dim] (embeddings,
    after each layer, after the final norm)."""

    logits: torch.Tensor
    hidden: list[torch.Tensor]


@torch.no_grad()
def reference_runs(hf: nn.Module, prompts: list[list[int]], new_tokens: int) -> tuple[list[list[int]], list[Run]]:
    """transformers' greedy continuation of every prompt through its own KV cache (the prompts left-padded in one
    batch, positions from the mask: `new_tokens` forwards of one token each), then one forward without cache over
    each prompt and all but its last new token (right-padded, masked): the logits and hidden states returned. That
    full recompute must pick the same tokens, or the reference disagrees with itself and nothing is compared."""
    width = max(len(p) for p in prompts)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, greedy = None, []
    for _ in range(new_tokens):
        out = hf(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        cache, ids = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        greedy.append(ids[:, 0].tolist())
        mask, positions = torch.cat([mask, torch.ones_like(ids)], -1), positions[:, -1:] + 1
    del cache, out
    greedy = [list(tokens) for tokens in zip(*greedy)]
    seqs = [p + g[:-1] for p, g in zip(prompts, greedy)]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    runs = [Run(out.logits[b, : len(s)], [h[b, : len(s)] for h in out.hidden_states]) for b, s in enumerate(seqs)]
    for p, (prompt, tokens, run) in enumerate(zip(prompts, greedy, runs)):
        recomputed = run.logits[len(prompt) - 1 :].argmax(-1).tolist()
        if recomputed != tokens:
            raise GateFailed(
                f"transformers' cached greedy tokens {tokens} of prompt {p} differ from its own full recompute "
                f"{recomputed}: the reference is not deterministic here; rerun, or report it with the entry"
            )
    return greedy, runs


@torch.no_grad()
def our_runs(
    model: nn.Module,
    weights: Source,
    sequences: list[list[int]],
    kv_max: int,
    prefills: list[int] | None = None,
    simulate: Callable[[], AbstractContextManager] | None = None,
) -> tuple[list[Run], list]:
    """Our decoder over every sequence one layer at a time (each layer's weights read once, `stream.reading`, when
    the model is streamed): the full forward of each sequence, and with `prefills` the same sequence through the KV
    cache as the signatures run it: its first `prefills[j]` tokens in one call, then one token per call. With
    `simulate` (a context in which the model computes as a file rounds, zoo/export/simulate.py), each sequence's
    full forward also runs inside it, from the same read of each layer. Returns the full forwards' Runs (the
    simulated ones after the others) and the cached calls' logits [T, V] (none without `prefills`)."""
    streaming = is_streamed(model)

    def block(module: nn.Module | None, prefix: str):
        return reading(module, weights, prefix) if streaming and module is not None else nullcontext()

    m, layout = model.model, model.layout
    k_shape, v_shape = model.kv_shapes(kv_max)
    n = len(sequences)
    lanes = [(j, nullcontext) for j in range(n)] + [(j, simulate) for j in range(n) if simulate is not None]
    positions = [torch.arange(len(s)) for s in sequences]
    full_inputs = [model.layer_inputs(pos, kv_max) for pos in positions]
    calls = [
        [(0, t), *((u, u + 1) for u in range(t, len(s)))] if prefills else []
        for s, t in zip(sequences, prefills or [0] * n)
    ]
    call_inputs = [[model.layer_inputs(pos[a:b], kv_max) for a, b in c] for pos, c in zip(positions, calls)]
    with block(m.embed_tokens, "model.embed_tokens"), block(m.embed_positions, "model.embed_positions"):
        xs = []
        for j, inside in lanes:
            with inside():
                xs.append(model.embed(torch.tensor([sequences[j]]), positions[j]))
    steps = [[x[:, a:b] for a, b in c] for x, c in zip(xs, calls)]
    hidden = [[x[0]] for x in xs]
    for i, layer in enumerate(m.layers):
        with block(layer, f"model.layers.{i}"):
            for lane, (j, inside) in enumerate(lanes):
                ropes, slots = full_inputs[j]
                zeros = torch.zeros(k_shape), torch.zeros(v_shape)
                with inside():
                    xs[lane], _, _ = layer(xs[lane], positions[j], ropes[i], *zeros, layout, slots, None)
                if i < len(m.layers) - 1:
                    hidden[lane].append(xs[lane][0])
            for j, pos in enumerate(positions):
                k, v = torch.zeros(k_shape), torch.zeros(v_shape)
                for c, ((a, b), (ropes_c, slots_c)) in enumerate(zip(calls[j], call_inputs[j])):
                    steps[j][c], k, v = layer(steps[j][c], pos[a:b], ropes_c[i], k, v, layout, slots_c, None)
    head = model.lm_head if model.lm_head is not None else m.embed_tokens
    head_name = "lm_head" if model.lm_head is not None else "model.embed_tokens"
    with block(m.norm, "model.norm"), block(head, head_name):
        runs, stepped = [], []
        for lane, (_, inside) in enumerate(lanes):
            with inside():
                normed = m.norm(xs[lane])
                hidden[lane].append(normed[0])
                runs.append(Run(model.logits(normed)[0], hidden[lane]))
        if prefills:
            stepped = [model.logits(m.norm(torch.cat(s, dim=1)))[0] for s in steps]
    return runs, stepped


@dataclass(frozen=True)
class DecoderGate(GateResult):
    """The decoder's verdict. With the entry's `expect_answer`, also our greedy answer to the first prompt, which
    must contain the expected text."""

    answer: str | None = None
    expect: str | None = None

    @property
    def answer_ok(self) -> bool:
        return self.answer is None or self.expect in self.answer

    @property
    def passed(self) -> bool:
        return self.figures.passed and self.answer_ok

    def summary(self) -> str:
        f, worst = self.figures, self.figures.worst
        text = (
            f"max |logit diff| {f.max_abs_diff:.2e} (atol {f.atol:.0e}; worst at prompt {worst.get('prompt')} "
            f"position {worst.get('position')} token {worst.get('token')}), greedy {f.greedy_equal}/{f.greedy_total}, "
            f"cached decode vs full forward {f.decode_vs_full_max_abs_diff:.2e} (atol {f.decode_atol:.0e})"
        )
        off = f.first_layer_off
        if off is not None:
            last = len(f.layers) - 1
            where = "the embeddings" if off == 0 else "the final norm" if off == last else f"layer {off - 1}"
            text += f"; first hidden state that differs: after {where} (relative diff {f.layers[off]:.2e})"
        return text

    def line(self) -> str:
        if self.answer is None:
            return super().line()
        verdict = "contains" if self.answer_ok else "MISSING"
        return f"{super().line()}\nanswer: {self.answer!r} ({verdict} {self.expect!r})"

    def to_report(self) -> dict:
        out = super().to_report()
        if self.answer is not None:
            out |= {"answer": self.answer, "expect": self.expect, "answer_ok": self.answer_ok}
        return out

    def answered(self, answer: str, expect: str) -> DecoderGate:
        return replace(self, answer=answer, expect=expect)


def greedy_answer(model: nn.Module, source: Source, tokenizer, ids: list[int], tokens: int, kv_max: int) -> str:
    """Our model's greedy answer, cut at the end-of-sequence token (a streamed model reads each layer per step; its
    embedding table, which a tied head also reads outside the table's own forward, for the whole answer)."""
    with reading(model.model.embed_tokens, source, "model.embed_tokens"), streamed(model, source):
        out = our_greedy(model, ids, tokens, kv_max)
    eos = tokenizer.eos_token_id
    return tokenizer.decode(out[: out.index(eos)] if eos in out else out, skip_special_tokens=True)


def decoder_gate(
    model: nn.Module, weights: Source, hf: nn.Module, prompts: list[list[int]], golden: GoldenConfig, kv_max: int
) -> DecoderGate:
    """Ours vs transformers layer by layer: the hidden state after every layer and the logits at every position of
    each prompt and its greedy continuation, the greedy tokens (ours, teacher-forced on transformers' continuation,
    must pick the same token at every step: then a free-running greedy gives the same tokens), and our cached calls
    (the prompt in one call, then a token per call, as prefill and decode run) vs our full forward. Holds one
    layer's weights at a time when the models are streamed (zoo/stream.py)."""
    result = GateFigures(atol=golden.atol, decode_atol=golden.decode_atol)
    greedy, ref_runs = reference_runs(hf, prompts, golden.new_tokens)
    sequences = [p + g[:-1] for p, g in zip(prompts, greedy)]
    runs, stepped = our_runs(model, weights, sequences, kv_max, [len(p) for p in prompts])
    result.layers = [0.0] * len(runs[0].hidden)
    for p, (ids, ours, ref, steps) in enumerate(zip(prompts, runs, ref_runs, stepped)):
        worst_at(result, (ours.logits - ref.logits).abs(), ours.logits, ref.logits, column="token", prompt=p)
        for i, (h, h_ref) in enumerate(zip(ours.hidden, ref.hidden)):
            rel = float((h - h_ref).abs().max()) / max(1.0, float(h_ref.abs().max()))
            result.layers[i] = max(result.layers[i], rel)
        result.decode_vs_full_max_abs_diff = max(
            result.decode_vs_full_max_abs_diff, float((steps - ours.logits).abs().max())
        )
        picks = ours.logits[len(ids) - 1 :].argmax(-1).tolist()
        result.greedy_equal += sum(a == b for a, b in zip(picks, greedy[p]))
        result.greedy_total += len(greedy[p])
    return DecoderGate(result, tuple(prompts))


def reference_arrays(hf: nn.Module, prompts: list[list[int]], new_tokens: int) -> dict[str, np.ndarray]:
    """What golden/ stores, from transformers only: prompt ids, top-k logits at a few positions, greedy tokens."""
    arrays = {}
    for p, ids in enumerate(prompts):
        positions = golden_positions(len(ids))
        top = reference_logits(hf, ids)[positions].topk(TOP_K, dim=-1)
        arrays[f"p{p}_ids"] = np.array(ids, dtype=np.int64)
        arrays[f"p{p}_positions"] = np.array(positions, dtype=np.int64)
        arrays[f"p{p}_topk_index"] = top.indices.numpy().astype(np.int64)
        arrays[f"p{p}_topk_value"] = top.values.numpy()
        arrays[f"p{p}_greedy"] = np.array(reference_greedy(hf, ids, new_tokens), dtype=np.int64)
    return arrays


def compare_to_golden(model: nn.Module, arrays: dict[str, np.ndarray], kv_max: int) -> dict:
    """Our logits at the golden positions and token ids, and our greedy tokens, against a stored reference."""
    max_diff, greedy_equal, greedy_total = 0.0, 0, 0
    for p in range(len([k for k in arrays if k.endswith("_ids")])):
        ids = arrays[f"p{p}_ids"].tolist()
        ours, _ = our_prefill(model, ids, kv_max)
        index = torch.from_numpy(arrays[f"p{p}_topk_index"])
        picked = ours[torch.from_numpy(arrays[f"p{p}_positions"])].gather(-1, index)
        max_diff = max(max_diff, float((picked - torch.from_numpy(arrays[f"p{p}_topk_value"])).abs().max()))
        greedy = arrays[f"p{p}_greedy"].tolist()
        greedy_equal += sum(a == b for a, b in zip(our_greedy(model, ids, len(greedy), kv_max), greedy))
        greedy_total += len(greedy)
    return {"max_abs_diff": max_diff, "greedy_equal": greedy_equal, "greedy_total": greedy_total}
