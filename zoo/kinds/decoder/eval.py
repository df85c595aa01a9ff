"""A decoder's eval: each window from an empty cache through the flatbuffer in zoo's runtime (prefill chunks of
its signatures, decode steps where a chunk does not fit) and through transformers fp32 eager on the same tokens;
logits of the window's second half are scored, then dropped (one window's logits alive at a time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.eval.metrics import Scores, score
from zoo.eval.text import EvalError, windows
from zoo.progress import progress
from zoo.runtime.model import LiteModel
from zoo.schema import ZooConfig


def open_model(cfg: ZooConfig, path: Path) -> LiteModel:
    """The flatbuffer, refused when it cannot give the logits the eval scores or is not the entry's."""
    model = LiteModel(path, cfg.export.kv_layout, cfg.threads)
    if model.vocab_size != cfg.model.arch.vocab_size:
        raise EvalError(
            f"{path.name} has {model.vocab_size} logits per position but entry {cfg.model.name} has a "
            f"vocabulary of {cfg.model.arch.vocab_size}: a flatbuffer of another entry?"
        )
    if cfg.eval.ctx > model.kv_max:
        raise EvalError(f"eval.ctx={cfg.eval.ctx} is larger than the kv_cache_max={model.kv_max} of {path.name}")
    for t in model.prefill_lens:
        if model.logits_positions(f"prefill_{t}") != t:
            raise EvalError(
                f"{path.name}: prefill_{t} returns logits for {model.logits_positions(f'prefill_{t}')} "
                f"of its {t} positions; the eval scores every position: export with "
                "export.prefill_logits=all"
            )
    return model


def flatbuffer_logits(model: LiteModel, ids: list[int], first: int) -> np.ndarray:
    """Logits [len(ids) - first, V] of positions first.. of `ids`, run from an empty cache."""
    model.reset()
    out, pos = [], 0
    for signature, n in model.prefill_plan(0, len(ids)):
        logits = model.step(signature, ids[pos : pos + n], pos)[0, :n]
        if pos + n > first:
            out.append(logits[max(first - pos, 0) :])
        pos += n
    return np.concatenate(out)


@torch.no_grad()
def reference_logits(hf: nn.Module, ids: list[int], first: int) -> np.ndarray:
    return hf(torch.tensor([ids])).logits[0, first:].float().numpy()


def decoder_scores(cfg: ZooConfig, path: Path, hf: nn.Module, tokens: list[int]) -> tuple[Scores, int]:
    """Scores of every window's second half (llama.cpp: positions ctx/2 .. ctx-2 predict the next token)."""
    model = open_model(cfg, path)
    if max(tokens) >= model.vocab_size:
        raise EvalError(f"token id {max(tokens)} of the text is outside the {model.vocab_size} logits of {path.name}")
    spans = windows(len(tokens), cfg.eval.ctx, cfg.eval.max_windows)
    first = cfg.eval.ctx // 2
    parts = []
    for start, end in progress(spans, desc="eval windows", unit="window"):
        ids = tokens[start : end - 1]  # the last token is only a target
        targets = np.array(tokens[start + first + 1 : end])
        parts.append(score(reference_logits(hf, ids, first), flatbuffer_logits(model, ids, first), targets))
    model.close()
    return Scores.concat(parts), len(spans)
