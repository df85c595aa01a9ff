"""Next-token choice from one logits row: greedy, or temperature / top-k / top-p sampling from a seeded numpy
Generator."""

from __future__ import annotations

import numpy as np

from zoo.errors import InputError
from zoo.schema import SamplingConfig, sampling_problem


class Sampler:
    """Greedy when temperature is 0; else softmax(logits / temperature) cut to top_k, then to the top_p mass."""

    def __init__(self, cfg: SamplingConfig):
        problem = sampling_problem(cfg)
        if problem:
            raise InputError(problem)
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def __call__(self, logits: np.ndarray) -> int:
        cfg = self.cfg
        if cfg.temperature == 0:
            return int(np.argmax(logits))
        x = logits.astype(np.float64) / cfg.temperature
        order = np.argsort(-x, kind="stable")
        if cfg.top_k:
            order = order[: cfg.top_k]
        p = np.exp(x[order] - x[order[0]])
        p /= p.sum()
        if cfg.top_p < 1:
            keep = int(np.searchsorted(np.cumsum(p), cfg.top_p)) + 1  # smallest prefix reaching the mass
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        return int(order[self.rng.choice(len(order), p=p)])
