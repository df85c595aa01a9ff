"""The encoder's golden gate (BERT-style embedders): pooled, normalized embeddings and their cosine matrix against
transformers with sentence-transformers' pooling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from zoo.golden import GateFigures, GateResult, prompt_ids, worst_at
from zoo.schema import Pooling, PoolingConfig, ZooConfig


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


@dataclass(frozen=True)
class EncoderGate(GateResult):
    """The encoder's verdict, with transformers' cosine similarities between the inputs' embeddings (the check
    compares the flatbuffer's to them) and how far ours are from them; `encoder_len` padded vs unpadded is the
    figures' decode_vs_full."""

    similarities: tuple[tuple[float, ...], ...] = ()
    similarity_max_abs_diff: float = 0.0
    encoder_len: int = 0

    def summary(self) -> str:
        f = self.figures
        return (
            f"max |hidden or embedding diff| {f.max_abs_diff:.2e} (atol {f.atol:.0e}; worst "
            f"{f.worst.get('output')} of sentence {f.worst.get('prompt')}), cosine similarities "
            f"max diff {self.similarity_max_abs_diff:.2e}, padded to {self.encoder_len} vs "
            f"unpadded {f.decode_vs_full_max_abs_diff:.2e} (atol {f.decode_atol:.0e})"
        )

    def to_report(self) -> dict:
        return {
            **super().to_report(),
            "summary": self.summary(),
            "similarities": [list(r) for r in self.similarities],
            "similarity_max_abs_diff": self.similarity_max_abs_diff,
        }


def encoder_gate(model: nn.Module, hf: nn.Module, prompts: list[list[int]], cfg: ZooConfig) -> EncoderGate:
    """Hidden states and embeddings vs transformers, their cosine similarities, and padding (to the export's
    encoder_len, masked) leaving our embedding unchanged (in place of the decoder's cached-decode check)."""
    result = GateFigures(atol=cfg.golden.atol, decode_atol=cfg.golden.decode_atol)
    ours_all, refs_all = [], []
    for p, ids in enumerate(prompts):
        ref_hidden, ref_emb = reference_embedding(hf, ids, cfg.model.arch.pooling)
        hidden, emb = our_embedding(model, ids)
        worst_at(result, (hidden - ref_hidden).abs(), hidden, ref_hidden, prompt=p, output="hidden_states")
        worst_at(result, (emb - ref_emb).abs()[None], emb[None], ref_emb[None], prompt=p, output="embedding")
        _, padded = our_embedding(model, ids, cfg.export.encoder_len)
        result.decode_vs_full_max_abs_diff = max(result.decode_vs_full_max_abs_diff, float((padded - emb).abs().max()))
        ours_all.append(emb)
        refs_all.append(ref_emb)
    ref_sim, our_sim = cosine_matrix(torch.stack(refs_all)), cosine_matrix(torch.stack(ours_all))
    return EncoderGate(
        result,
        tuple(prompts),
        tuple(map(tuple, ref_sim.tolist())),
        float((ref_sim - our_sim).abs().max()),
        cfg.export.encoder_len,
    )


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
