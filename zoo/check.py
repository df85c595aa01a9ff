"""The post-export check's kind-neutral parts: the metrics of a flatbuffer's logits against the PyTorch model's,
the bound applied to them, and the helpers that feed a file's signatures (each kind's check is in its package,
zoo/kinds/<kind>/check.py).

Both sides get the same inputs and the PyTorch side runs in float64 (zoo/exact.py, as the golden gate does), so the
figures measure the flatbuffer's own error, not whichever way float32 rounding fell in one PyTorch call. The bounds
come from the quant recipe (`quant.check`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.errors import ConfigError
from zoo.eval.text import EvalError
from zoo.schema import QuantCheck


def cache_names(n: int) -> list[str]:
    return [f"kv_cache_{kind}_{i}" for i in range(n // 2) for kind in ("k", "v")]


def logit_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How far quantized logits are from the float ones, over the last axis (vocab), averaged over positions."""
    ref = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    got = got.reshape(-1, got.shape[-1]).astype(np.float64)
    cosine = np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    log_p, log_q = _log_softmax(ref), _log_softmax(got)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), -1)
    return {
        "max_abs_diff": float(np.abs(ref - got).max()),
        "cosine": float(cosine.mean()),
        "top1": float(np.mean(ref.argmax(-1) == got.argmax(-1))),
        "kl": float(kl.mean()),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_bound(metrics: dict[str, float], check: QuantCheck) -> float | None:
    """The file's KL bound (QuantCheck): `kl_over_simulated` times the KL of the recipe's rounding simulated on the
    PyTorch model (`simulated_kl`, none for a float recipe) plus `kl_slack`, capped by `max_kl`. The simulation
    measures what the recipe costs this model, so the bound means the same on every model: int4_block32 costs
    SmolLM2's real weights 0.010 and Llama-3.2-1B's random ones 0.066, their files 0.012 and 0.066; a small random
    model's int8 file with two layers' down_proj swapped measures 0.00058 against 0.000002 simulated. Good files
    measure 0.8-1.9x their simulation (docs/quantization.md): the default multiple is 3."""
    bounds = [check.max_kl]
    if check.kl_over_simulated is not None:
        bounds.append(round(check.kl_over_simulated * metrics.get("simulated_kl", 0.0) + check.kl_slack, 6))
    return min((b for b in bounds if b is not None), default=None)


def check_failures(metrics: dict[str, float], check: QuantCheck) -> list[str]:
    """One line per bound of `check` that `metrics` (from logit_metrics) violates; empty when all hold."""
    bounds = [
        ("max_abs_diff", check.max_abs_diff, lambda v, b: v <= b),
        ("cosine", check.min_cosine, lambda v, b: v >= b),
        ("kl", kl_bound(metrics, check), lambda v, b: v <= b),
        ("greedy", check.min_greedy, lambda v, b: v >= b),
        ("similarity_max_diff", check.max_similarity_diff, lambda v, b: v <= b),
    ]
    # A kind's check measures what its outputs have (an encoder has no vocabulary: no top-1, no KL); a bound on a
    # metric it does not measure does not apply to it. Where there are distributions (KL), the cosine of raw logits
    # and the top-1 agreement are reported, not bounded: both depend on the model, not only on the file (Gemma-2B's
    # good int8 file, KL 0.0030, has cosine 0.99638 under SmolLM2's 0.9966; Qwen2.5-0.5B's random weights give
    # near-flat distributions whose near-ties flip: top-1 0.84 at KL 0.00055), so a good file would fail on one
    # model and pass on another. KL against the recipe's simulation (kl_bound) means the same on every entry.
    return [
        f"{key} {metrics[key]:.6g} violates bound {bound}"
        for key, bound, ok in bounds
        if bound is not None
        and key in metrics
        and not ok(metrics[key], bound)
        and not (key == "cosine" and "kl" in metrics)
    ]


# --- encoder kinds: the same comparison through their signatures (encode + decode, embed) ---------------------------


def padded(ids: list[int], length: int) -> dict[str, np.ndarray]:
    """`tokens` and `attention_mask` [1, length] of one input padded with id 0 (masked)."""
    if len(ids) > length:
        raise ConfigError(f"check input of {len(ids)} tokens exceeds export.encoder_len={length}: raise it")
    pad = length - len(ids)
    return {
        "tokens": np.array([ids + [0] * pad], np.int32),
        "attention_mask": np.array([[1] * len(ids) + [0] * pad], np.int32),
    }


def as_torch(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).long() for k, v in feed.items()}


def signatures(path: Path, threads: int, names: tuple[str, ...]) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    have = interpreter.get_signature_list()
    if missing := [n for n in names if n not in have]:
        raise EvalError(f"{path.name} has no {', '.join(missing)} signature (has {', '.join(sorted(have))})")
    return {n: interpreter.get_signature_runner(n) for n in names}
