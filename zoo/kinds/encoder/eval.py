"""The encoder's eval (BERT-style embedders): the pooled embedding of each sentence of the text by `embed` against
transformers' (with sentence-transformers' pooling): their cosine similarity per sentence, its mean and spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.check import padded, signatures
from zoo.eval.text import EvalError, sentences
from zoo.progress import progress
from zoo.schema import ZooConfig


@torch.no_grad()
def encoder_figures(cfg: ZooConfig, path: Path, hf: nn.Module, text: str, tokenizer) -> dict:
    """Cosine of flatbuffer vs transformers pooled embeddings per sentence (the first `max_windows` sentences)."""
    from zoo.kinds.encoder.gate import reference_embedding

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
