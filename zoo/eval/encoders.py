"""Evals of the encoder kinds on the same text.

Encoder-decoder (T5): teacher-forced decoder perplexity on text pairs, the same window of text as source and
target: `encode` of the window, then `decode` steps fed the target shifted right (from the decoder start token),
against transformers' logits for the same pair; every target token is scored, with the decoder's metrics.
Encoder (BERT): the pooled embedding of each sentence of the text by `embed` against transformers' (with
sentence-transformers' pooling): their cosine similarity per sentence, its mean and spread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.check import cache_names, padded
from zoo.eval.metrics import Scores, score
from zoo.eval.text import EvalError, sentences, windows
from zoo.progress import progress
from zoo.schema import ZooConfig


def signatures(path: Path, threads: int, names: tuple[str, ...]) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    have = interpreter.get_signature_list()
    if missing := [n for n in names if n not in have]:
        raise EvalError(f"{path.name} has no {', '.join(missing)} signature (has {', '.join(sorted(have))})")
    return {n: interpreter.get_signature_runner(n) for n in names}


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


@torch.no_grad()
def encoder_figures(cfg: ZooConfig, path: Path, hf: nn.Module, text: str, tokenizer) -> dict:
    """Cosine of flatbuffer vs transformers pooled embeddings per sentence (the first `max_windows` sentences)."""
    from zoo.golden import reference_embedding

    if tokenizer is None:
        raise EvalError("the entry has no tokenizer (model.tokenizer.source): the eval embeds real sentences")
    embed = signatures(path, cfg.threads, ("embed",))["embed"]
    chosen = sentences(text)[: cfg.eval.max_windows]
    if not chosen:
        raise EvalError(f"eval.text={cfg.eval.text} has no sentence of 3 words or more")
    cosines = []
    for sentence in progress(chosen, desc="eval sentences", unit="sentence"):
        ids = tokenizer(sentence, truncation=True, max_length=cfg.export.encoder_len)["input_ids"]
        if max(ids) >= cfg.model.arch.vocab_size:
            raise EvalError(f"token id {max(ids)} is outside the vocabulary of entry {cfg.model.name}")
        got = embed(**padded(ids, cfg.export.encoder_len))["embedding"][0].astype(np.float64)
        ref = reference_embedding(hf, ids, cfg.model.arch.pooling)[1].numpy().astype(np.float64)
        if got.shape != ref.shape:
            raise EvalError(
                f"{path.name} embeds into {got.shape[-1]} dims but entry {cfg.model.name} into "
                f"{ref.shape[-1]}: a flatbuffer of another entry?"
            )
        cosines.append(float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref))))
    c = np.array(cosines)
    return {
        "cosine_mean": float(c.mean()),
        "cosine_std": float(c.std()),
        "cosine_min": float(c.min()),
        "cosine_p1": float(np.percentile(c, 1)),
        "sentences": len(c),
    }
