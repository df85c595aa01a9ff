"""The golden gate: our re-authored model must reproduce `transformers` on the same weights before any export.

Reference values only ever come from the transformers class named in the entry (`reference_*` functions never
touch our model); `golden/` files hold top-k logits and greedy tokens of that reference for a fixed prompt set.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zoo.checkpoint import Checkpoint
from zoo.checkpoint.sources import hf_config_class
from zoo.errors import CheckpointError, GateFailed
from zoo.runtime.tokenizer import encode_prompt
from zoo.schema import GoldenConfig, Pooling, PoolingConfig, ReferenceConfig, ZooConfig
from zoo.stream import Source, is_streamed, reading

TOP_K = 8


def reference_model(reference: ReferenceConfig, checkpoint: Checkpoint, resident: bool = True) -> nn.Module:
    """The transformers model class of the entry, built from the checkpoint's own config and tensors (float32).
    Not `resident`: its parameters stay on the meta device (buffers are real) for `reference_source` to stream."""
    from accelerate import init_empty_weights
    from transformers.initialization import no_init_weights

    model_cls, _ = hf_config_class(reference)
    config = checkpoint.config
    config._attn_implementation = "eager"
    if not resident:
        with init_empty_weights(include_buffers=False):
            model = model_cls(config).float().eval()
        model.tie_weights()
        return model
    with no_init_weights():
        model = model_cls(config)
    tensors = dict(checkpoint.tensors)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    unexpected = [k for k in unexpected if k not in dict(model.named_buffers())]  # e.g. BERT's old position_ids
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"{reference.hf_class} does not take this checkpoint: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.tie_weights()
    # As from_pretrained does: a tied tensor the checkpoint stores itself stays its own (transformers 5 builds every
    # T5 tied, yet a flan-t5 checkpoint has an lm_head that differs from its embedding).
    own = {k: tensors[k] for k in tied if k in tensors}
    model.load_state_dict(own, strict=False, assign=True)
    return model.float().eval()


def reference_source(hf: nn.Module, checkpoint: Checkpoint, hf_class: str) -> Source:
    """Parameter name -> the checkpoint tensor, for `stream.streamed(hf, ...)`: a tied parameter reads the tensor the
    checkpoint stores under another of its names."""
    names: dict[int, list[str]] = {}
    for name, param in hf.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    stored = {}
    for group in names.values():
        present = [n for n in group if n in checkpoint.tensors]
        if not present:
            raise CheckpointError(f"{hf_class} does not take this checkpoint: missing {group[0]}")
        stored.update({n: n if n in checkpoint.tensors else present[0] for n in group})
    extra = sorted(set(checkpoint.tensors) - set(stored))
    if extra:
        raise CheckpointError(f"{hf_class} does not take this checkpoint: unexpected {extra[:5]}")
    return lambda name, dtype: checkpoint.tensors.get(stored[name], dtype)


def prompt_ids(golden: GoldenConfig, tokenizer, vocab_size: int, seed: int, chat: bool) -> list[list[int]]:
    """The fixed prompt set: text prompts through the tokenizer, or seeded random ids for entries without one."""
    if tokenizer is not None:
        return [encode_prompt(tokenizer, text, chat) for text in golden.prompts]
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(vocab_size, (n,), generator=gen).tolist() for n in golden.random_prompt_lens]


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
class GateResult:
    max_abs_diff: float = 0.0
    worst: dict = field(default_factory=dict)
    greedy_equal: int = 0
    greedy_total: int = 0
    decode_vs_full_max_abs_diff: float = 0.0
    atol: float = 0.0
    decode_atol: float = 0.0
    # hidden state after each layer (index 0: the embeddings, i: after layer i-1, last: the final norm), ours vs
    # transformers, as max |diff| / max(1, max |reference|); empty for kinds that do not compare layers
    layers: list[float] = field(default_factory=list)
    summary: str = ""  # the gate line of kinds whose checks are not the decoder's (empty: the decoder's line)
    extra: dict = field(default_factory=dict)  # kind-specific report entries

    @property
    def greedy_match(self) -> bool:
        return self.greedy_equal == self.greedy_total

    @property
    def first_layer_off(self) -> int | None:
        """The first hidden state (index as in `layers`) past atol: where ours starts to differ."""
        return next((i for i, d in enumerate(self.layers) if d > self.atol), None)

    @property
    def passed(self) -> bool:
        decode_ok = self.decode_vs_full_max_abs_diff <= self.decode_atol
        layers_ok = self.first_layer_off is None
        return self.max_abs_diff <= self.atol and decode_ok and self.greedy_match and layers_ok

    def report(self) -> dict:
        return {
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "atol": self.atol,
            "worst": self.worst,
            "greedy_match": self.greedy_match,
            "greedy_tokens_equal": f"{self.greedy_equal}/{self.greedy_total}",
            "decode_vs_full_max_abs_diff": self.decode_vs_full_max_abs_diff,
            "decode_atol": self.decode_atol,
            **({"layers_max_rel_diff": self.layers, "first_layer_off": self.first_layer_off} if self.layers else {}),
            **({"summary": self.summary} if self.summary else {}),
            **self.extra,
        }


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


def gate(
    model: nn.Module, weights: Source, hf: nn.Module, prompts: list[list[int]], golden: GoldenConfig, kv_max: int
) -> GateResult:
    """Ours vs transformers layer by layer: the hidden state after every layer and the logits at every position of
    each prompt and its greedy continuation, the greedy tokens (ours, teacher-forced on transformers' continuation,
    must pick the same token at every step: then a free-running greedy gives the same tokens), and our cached calls
    (the prompt in one call, then a token per call, as prefill and decode run) vs our full forward. Holds one
    layer's weights at a time when the models are streamed (zoo/stream.py)."""
    result = GateResult(atol=golden.atol, decode_atol=golden.decode_atol)
    greedy, ref_runs = reference_runs(hf, prompts, golden.new_tokens)
    sequences = [p + g[:-1] for p, g in zip(prompts, greedy)]
    runs, stepped = our_runs(model, weights, sequences, kv_max, [len(p) for p in prompts])
    result.layers = [0.0] * len(runs[0].hidden)
    for p, (ids, ours, ref, steps) in enumerate(zip(prompts, runs, ref_runs, stepped)):
        diff = (ours.logits - ref.logits).abs()
        if float(diff.max()) >= result.max_abs_diff:
            pos, tok = divmod(int(diff.argmax()), diff.shape[-1])
            result.max_abs_diff = float(diff.max())
            result.worst = {
                "prompt": p,
                "position": pos,
                "token": tok,
                "ours": float(ours.logits[pos, tok]),
                "reference": float(ref.logits[pos, tok]),
            }
        for i, (h, h_ref) in enumerate(zip(ours.hidden, ref.hidden)):
            rel = float((h - h_ref).abs().max()) / max(1.0, float(h_ref.abs().max()))
            result.layers[i] = max(result.layers[i], rel)
        result.decode_vs_full_max_abs_diff = max(
            result.decode_vs_full_max_abs_diff, float((steps - ours.logits).abs().max())
        )
        picks = ours.logits[len(ids) - 1 :].argmax(-1).tolist()
        result.greedy_equal += sum(a == b for a, b in zip(picks, greedy[p]))
        result.greedy_total += len(greedy[p])
    return result


def golden_positions(length: int) -> list[int]:
    return sorted({0, length // 2, length - 1})


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


# --- encoder_decoder (T5): encoder states, teacher-forced decoder logits, greedy seq2seq tokens ----------------------


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


def _worst(result: GateResult, diff: torch.Tensor, ours: torch.Tensor, ref: torch.Tensor, **where) -> None:
    """Record diff's maximum in result when it is the worst so far (row, column of a 2-D diff)."""
    if float(diff.max()) >= result.max_abs_diff:
        row, col = divmod(int(diff.argmax()), diff.shape[-1])
        result.max_abs_diff = float(diff.max())
        result.worst = {
            **where,
            "position": row,
            "index": col,
            "ours": float(ours[row, col]),
            "reference": float(ref[row, col]),
        }


def seq2seq_gate(model: nn.Module, hf: nn.Module, prompts: list[list[int]], cfg: ZooConfig) -> GateResult:
    """Encoder states and teacher-forced logits vs transformers, greedy tokens, our cached decode vs one call."""
    golden, kv_max, start = cfg.golden, cfg.export.kv_cache_max, cfg.model.arch.decoder_start_token
    result = GateResult(atol=golden.atol, decode_atol=golden.decode_atol)
    for p, (ids, dec) in enumerate(zip(prompts, decoder_inputs(cfg, len(prompts)))):
        ref_states, ref_logits = reference_seq2seq(hf, ids, dec)
        states, logits = our_seq2seq(model, ids, dec, kv_max)
        _worst(result, (states - ref_states).abs(), states, ref_states, prompt=p, output="encoder_states")
        _worst(result, (logits - ref_logits).abs(), logits, ref_logits, prompt=p, output="decoder_logits")
        _, stepwise = our_seq2seq_steps(model, ids, dec, start, len(dec), kv_max)
        result.decode_vs_full_max_abs_diff = max(
            result.decode_vs_full_max_abs_diff, float((stepwise - logits).abs().max())
        )
        ref_tokens = reference_seq2seq_greedy(hf, ids, start, golden.new_tokens)
        our_tokens, _ = our_seq2seq_steps(model, ids, None, start, golden.new_tokens, kv_max)
        result.greedy_equal += sum(a == b for a, b in zip(ref_tokens, our_tokens))
        result.greedy_total += len(ref_tokens)
        if p == 0:
            result.extra["reference_greedy"] = ref_tokens  # what the flatbuffer's greedy generation must give
    worst = result.worst
    result.summary = (
        f"max |diff| {result.max_abs_diff:.2e} (atol {result.atol:.0e}; worst in {worst.get('output')} of "
        f"prompt {worst.get('prompt')} position {worst.get('position')}), greedy seq2seq "
        f"{result.greedy_equal}/{result.greedy_total}, cached decode vs one call "
        f"{result.decode_vs_full_max_abs_diff:.2e} (atol {result.decode_atol:.0e})"
    )
    return result


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


# --- encoder (BERT): last hidden states, pooled sentence embeddings, their cosine similarities ----------------------


def encoder_inputs(cfg: ZooConfig, tokenizer) -> list[list[int]]:
    """The golden sentences through the tokenizer, or seeded random ids for entries without one."""
    if tokenizer is None:
        return prompt_ids(cfg.golden, None, cfg.model.arch.vocab_size, cfg.seed, False)
    return [tokenizer(text)["input_ids"] for text in cfg.golden.sentences]


@torch.no_grad()
def reference_embedding(hf: nn.Module, ids: list[int], pooling: PoolingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' last hidden states [S, dim] and sentence-transformers' pooling of them [dim] (one unpadded
    sentence: mean over all tokens, or the first; then Normalize)."""
    hidden = hf(torch.tensor([ids])).last_hidden_state[0].float()
    pooled = hidden[0] if Pooling(pooling.mode) is Pooling.cls else hidden.mean(0)
    return hidden, torch.nn.functional.normalize(pooled, dim=-1) if pooling.normalize else pooled


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(embeddings, dim=-1)
    return unit @ unit.T


@torch.no_grad()
def our_embedding(model: nn.Module, ids: list[int], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Our hidden states [S, dim] and embedding [dim] of one sentence, padded to `length` (masked) when given."""
    pad = (length or len(ids)) - len(ids)
    tokens = torch.tensor([ids + [0] * pad])
    mask = torch.tensor([[1] * len(ids) + [0] * pad])
    return model.hidden(tokens, mask)[0, : len(ids)], model(tokens, mask)[0]


def encoder_gate(model: nn.Module, hf: nn.Module, prompts: list[list[int]], cfg: ZooConfig) -> GateResult:
    """Hidden states and embeddings vs transformers, their cosine similarities, and padding (to the export's
    encoder_len, masked) leaving our embedding unchanged (in place of the decoder's cached-decode check)."""
    result = GateResult(atol=cfg.golden.atol, decode_atol=cfg.golden.decode_atol)
    ours_all, refs_all = [], []
    for p, ids in enumerate(prompts):
        ref_hidden, ref_emb = reference_embedding(hf, ids, cfg.model.arch.pooling)
        hidden, emb = our_embedding(model, ids)
        _worst(result, (hidden - ref_hidden).abs(), hidden, ref_hidden, prompt=p, output="hidden_states")
        _worst(result, (emb - ref_emb).abs()[None], emb[None], ref_emb[None], prompt=p, output="embedding")
        _, padded = our_embedding(model, ids, cfg.export.encoder_len)
        result.decode_vs_full_max_abs_diff = max(result.decode_vs_full_max_abs_diff, float((padded - emb).abs().max()))
        ours_all.append(emb)
        refs_all.append(ref_emb)
    ref_sim, our_sim = cosine_matrix(torch.stack(refs_all)), cosine_matrix(torch.stack(ours_all))
    result.extra["similarities"] = ref_sim.tolist()
    result.extra["similarity_max_abs_diff"] = float((ref_sim - our_sim).abs().max())
    result.summary = (
        f"max |hidden or embedding diff| {result.max_abs_diff:.2e} (atol {result.atol:.0e}; worst "
        f"{result.worst.get('output')} of sentence {result.worst.get('prompt')}), cosine similarities "
        f"max diff {result.extra['similarity_max_abs_diff']:.2e}, padded to {cfg.export.encoder_len} vs "
        f"unpadded {result.decode_vs_full_max_abs_diff:.2e} (atol {result.decode_atol:.0e})"
    )
    return result


def encoder_reference_arrays(hf: nn.Module, prompts: list[list[int]], cfg: ZooConfig) -> dict[str, np.ndarray]:
    """From transformers only: ids, last hidden states, pooled embeddings and their cosine similarities."""
    arrays, embeddings = {}, []
    for p, ids in enumerate(prompts):
        hidden, emb = reference_embedding(hf, ids, cfg.model.arch.pooling)
        arrays[f"p{p}_ids"] = np.array(ids, dtype=np.int64)
        arrays[f"p{p}_hidden_value"] = hidden.numpy()
        arrays[f"p{p}_embedding_value"] = emb.numpy()
        embeddings.append(emb)
    arrays["similarities_value"] = cosine_matrix(torch.stack(embeddings)).numpy()
    return arrays


def encoder_compare(model: nn.Module, arrays: dict[str, np.ndarray], cfg: ZooConfig) -> dict:
    max_diff = 0.0
    for p in range(len([k for k in arrays if k.endswith("_ids")])):
        hidden, emb = our_embedding(model, arrays[f"p{p}_ids"].tolist())
        max_diff = max(
            max_diff,
            float((hidden - torch.from_numpy(arrays[f"p{p}_hidden_value"])).abs().max()),
            float((emb - torch.from_numpy(arrays[f"p{p}_embedding_value"])).abs().max()),
        )
    return {"max_abs_diff": max_diff, "greedy_equal": 0, "greedy_total": 0}
