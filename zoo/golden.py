"""The golden gate: our re-authored model must reproduce `transformers` on the same weights before any export.

Reference values only ever come from the transformers class named in the entry (`reference_*` functions never
touch our model); `golden/` files hold top-k logits and greedy tokens of that reference for a fixed prompt set.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zoo.checkpoint import Checkpoint
from zoo.checkpoint.sources import hf_config_class
from zoo.config import GoldenConfig, ReferenceConfig
from zoo.runtime.tokenizer import encode_prompt

TOP_K = 8


def reference_model(reference: ReferenceConfig, checkpoint: Checkpoint) -> nn.Module:
    """The transformers model class of the entry, built from the checkpoint's own config and tensors (float32)."""
    from transformers.initialization import no_init_weights

    model_cls, _ = hf_config_class(reference)
    config = checkpoint.config
    config._attn_implementation = "eager"
    with no_init_weights():
        model = model_cls(config)
    missing, unexpected = model.load_state_dict(checkpoint.tensors, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if set(missing) - tied or unexpected:
        raise ValueError(f"{reference.hf_class} does not take this checkpoint: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    return model.float().eval()


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
    return seq[len(ids):]


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

    @property
    def greedy_match(self) -> bool:
        return self.greedy_equal == self.greedy_total

    @property
    def passed(self) -> bool:
        decode_ok = self.decode_vs_full_max_abs_diff <= self.decode_atol
        return self.max_abs_diff <= self.atol and decode_ok and self.greedy_match

    def report(self) -> dict:
        return {"passed": self.passed, "max_abs_diff": self.max_abs_diff, "atol": self.atol, "worst": self.worst,
                "greedy_match": self.greedy_match, "greedy_tokens_equal": f"{self.greedy_equal}/{self.greedy_total}",
                "decode_vs_full_max_abs_diff": self.decode_vs_full_max_abs_diff, "decode_atol": self.decode_atol}


def gate(model: nn.Module, hf: nn.Module, prompts: list[list[int]], golden: GoldenConfig, kv_max: int) -> GateResult:
    """Ours vs transformers on every prompt position, greedy tokens, and our cached decode vs our full forward."""
    result = GateResult(atol=golden.atol, decode_atol=golden.decode_atol)
    for p, ids in enumerate(prompts):
        ref = reference_logits(hf, ids)
        ours, _ = our_prefill(model, ids, kv_max)
        diff = (ours - ref).abs()
        if float(diff.max()) >= result.max_abs_diff:
            pos, tok = divmod(int(diff.argmax()), diff.shape[-1])
            result.max_abs_diff = float(diff.max())
            result.worst = {"prompt": p, "position": pos, "token": tok, "ours": float(ours[pos, tok]),
                            "reference": float(ref[pos, tok])}
        stepwise = our_stepwise(model, ids, kv_max)
        result.decode_vs_full_max_abs_diff = max(result.decode_vs_full_max_abs_diff, float((stepwise - ours).abs().max()))
        ref_tokens = reference_greedy(hf, ids, golden.new_tokens)
        our_tokens = our_greedy(model, ids, golden.new_tokens, kv_max)
        result.greedy_equal += sum(a == b for a, b in zip(ref_tokens, our_tokens))
        result.greedy_total += len(ref_tokens)
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
