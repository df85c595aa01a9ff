"""The encoder-decoder's eval (T5): teacher-forced decoder perplexity on text pairs, the same window of text as
source and target: `encode` of the window, then `decode` steps fed the target shifted right (from the decoder start
token), against transformers' logits for the same pair; every target token is scored, with the decoder's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.check import cache_names, padded, signatures
from zoo.eval.metrics import Scores, score
from zoo.eval.text import EvalError, windows
from zoo.progress import progress
from zoo.schema import ZooConfig


@torch.no_grad()
def seq2seq_scores(cfg: ZooConfig, path: Path, hf: nn.Module, tokens: list[int]) -> tuple[Scores, int]:
    """Windows of min(ctx, encoder_len, kv_cache_max) tokens, each both source and target."""
    runners = signatures(path, cfg.threads, ("encode", "decode"))
    length = min(cfg.eval.ctx, cfg.export.encoder_len, cfg.export.kv_cache_max)
    spans = windows(len(tokens), length, cfg.eval.max_windows)
    layers, start_token = cfg.model.arch.num_layers, cfg.model.arch.decoder_start_token
    details = runners["decode"].get_input_details()
    empty = {n: np.zeros(details[n]["shape"], details[n]["dtype"]) for n in cache_names(2 * layers)}
    parts = []
    for start, end in progress(spans, desc="eval windows", unit="window"):
        ids = tokens[start:end]
        feed = padded(ids, cfg.export.encoder_len)
        encoded = runners["encode"](**feed)
        cross = {f"cross_{k}_{i}": encoded[f"cross_{k}_{i}"] for i in range(layers) for k in ("k", "v")}
        shifted = [start_token, *ids[:-1]]
        cache, got = empty, []
        for pos, token in enumerate(shifted):
            out = runners["decode"](
                tokens=np.array([[token]], np.int32),
                input_pos=np.array([pos], np.int32),
                attention_mask=feed["attention_mask"],
                **cross,
                **cache,
            )
            got.append(out["logits"][0, -1])
            cache = {n: out[n] for n in cache_names(2 * layers)}
        if got[0].shape[-1] != cfg.model.arch.vocab_size:
            raise EvalError(
                f"{path.name} has {got[0].shape[-1]} logits per position but entry {cfg.model.name} has "
                f"a vocabulary of {cfg.model.arch.vocab_size}: a flatbuffer of another entry?"
            )
        ref = hf(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([shifted])).logits[0].float().numpy()
        parts.append(score(ref, np.stack(got), np.array(ids)))
    return Scores.concat(parts), len(spans)
