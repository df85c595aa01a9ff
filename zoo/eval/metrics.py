"""llama.cpp's figures (`llama-perplexity --kl-divergence`) from per-token scores of a reference and a flatbuffer.

Per scored token: each side's negative log-likelihood of the true next token, KL(reference || flatbuffer) of the two
softmaxes, whether their argmaxes agree, and Δp, the change of the true token's probability. `summarize` turns the
concatenated scores of every window into perplexities with standard errors, their ratio and difference, KLD
statistics, "same top p" and RMS Δp. Only scores are kept between windows, never logits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class Scores:
    """One entry per scored token (float64 / bool arrays of equal length)."""

    nll_ref: np.ndarray
    nll_got: np.ndarray
    kld: np.ndarray
    same_top: np.ndarray
    dp: np.ndarray

    @classmethod
    def concat(cls, parts: list[Scores]) -> Scores:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def __len__(self) -> int:
        return len(self.kld)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def score(ref_logits: np.ndarray, got_logits: np.ndarray, targets: np.ndarray) -> Scores:
    """Scores of positions whose logits ([N, V] each) predict `targets` [N]."""
    if ref_logits.shape != got_logits.shape:
        raise ValueError(f"logits of shape {got_logits.shape} vs the reference's {ref_logits.shape}")
    log_p, log_q = log_softmax(ref_logits), log_softmax(got_logits)
    rows = np.arange(len(targets))
    p = np.exp(log_p)
    return Scores(
        nll_ref=-log_p[rows, targets],
        nll_got=-log_q[rows, targets],
        kld=np.maximum(np.sum(p * (log_p - log_q), -1), 0.0),  # >= 0 up to rounding
        same_top=log_p.argmax(-1) == log_q.argmax(-1),
        dp=np.exp(log_q[rows, targets]) - p[rows, targets],
    )


def _sem(x: np.ndarray) -> float:
    """Standard error of the mean (llama.cpp: sqrt(var / (n - 1)))."""
    return float(np.std(x) / np.sqrt(len(x) - 1)) if len(x) > 1 else 0.0


def summarize(s: Scores) -> dict[str, float]:
    """The figures of llama.cpp's KL-divergence report. PPL = exp(mean NLL) with SE = PPL * SE(mean NLL); the ratio
    is exp(mean(NLL_got - NLL_ref)) (its SE by the same rule); ΔPPL's SE by the delta method with the covariance of
    the two NLLs, since both are measured on the same tokens."""
    n = len(s)
    ppl_ref, ppl_got = float(np.exp(s.nll_ref.mean())), float(np.exp(s.nll_got.mean()))
    diff = s.nll_got - s.nll_ref
    ratio = float(np.exp(diff.mean()))
    cov = np.cov(s.nll_ref, s.nll_got)[0, 1] / (n - 1) if n > 1 else 0.0
    var_dppl = (ppl_got * _sem(s.nll_got)) ** 2 + (ppl_ref * _sem(s.nll_ref)) ** 2 - 2 * ppl_got * ppl_ref * cov
    same = s.same_top.astype(np.float64)
    return {
        "ppl": ppl_got,
        "ppl_se": ppl_got * _sem(s.nll_got),
        "ppl_ref": ppl_ref,
        "ppl_ref_se": ppl_ref * _sem(s.nll_ref),
        "dppl": ppl_got - ppl_ref,
        "dppl_se": float(np.sqrt(max(var_dppl, 0.0))),
        "ppl_ratio": ratio,
        "ppl_ratio_se": ratio * _sem(diff),
        "kld_mean": float(s.kld.mean()),
        "kld_se": _sem(s.kld),
        "kld_median": float(np.median(s.kld)),
        "kld_p99": float(np.percentile(s.kld, 99)),
        "kld_max": float(s.kld.max()),
        "same_top": float(same.mean()),
        "same_top_se": _sem(same),
        "rms_dp": float(np.sqrt(np.mean(s.dp**2))),
        "tokens": n,
    }
