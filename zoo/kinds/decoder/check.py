"""The decoder's post-export check: the flatbuffer's own greedy decode in zoo's runtime against our PyTorch model
on the same tokens, plain and with the recipe's rounding simulated (zoo/check.py: the kind-neutral metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from zoo.errors import ConfigError
from zoo.export.simulate import Rounding
from zoo.resources import release_memory
from zoo.schema import ExportConfig, PrefillLogits
from zoo.stream import Source


def prefill_length(prompt_len: int, prefill_lens: list[int]) -> int:
    """The smallest prefill signature that holds the prompt (all but its last token, which decode takes)."""
    fitting = [t for t in sorted(prefill_lens) if t >= prompt_len - 1]
    if not fitting:
        raise ConfigError(
            f"check prompt of {prompt_len} tokens needs a prefill length >= {prompt_len - 1}, "
            f"export.prefill_lens={prefill_lens}: add one that long"
        )
    return fitting[0]


def run_check(
    path: Path,
    model: nn.Module,
    weights: Source,
    prompt: list[int],
    export: ExportConfig,
    threads: int,
    rounds: dict[str, Rounding],
) -> dict:
    """Logits at the same positions of the flatbuffer ('tflite'), the PyTorch model ('torch') and, when the recipe
    rounds anything (`rounds`, zoo/export/simulate.py), the PyTorch model with that rounding ('simulated'): [N, V].

    The flatbuffer prefills the prompt and then decodes `export.check_steps` tokens, each its own greedy choice;
    the PyTorch model then runs that whole sequence once, one layer at a time when streamed (zoo/golden.py
    our_runs: its full forward, which the gate proved equal to its cached decode), plain and simulated from the
    same read of each layer. The runtime (XNNPACK's packed weights) is closed before the PyTorch side reads a
    weight: the two never hold memory at once."""
    from zoo.export.simulate import simulated
    from zoo.kinds.decoder.gate import our_runs

    got, positions, sequence = flatbuffer_greedy(path, prompt, export, threads)
    release_memory()
    simulate = (lambda: simulated(model, rounds)) if rounds else None
    runs, _ = our_runs(model, weights, [sequence], export.kv_cache_max, simulate=simulate)
    logits = {"tflite": got, "torch": runs[0].logits[positions].numpy()}
    if rounds:
        logits["simulated"] = runs[1].logits[positions].numpy()
    return logits


def flatbuffer_greedy(
    path: Path, prompt: list[int], export: ExportConfig, threads: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """The flatbuffer's logits [N, V] over the prompt's prefill and its own greedy decode steps, the positions they
    are at, and the token sequence it read.

    Run by zoo's runtime (LiteModel: what zoo.generate runs), whose signatures share one packed copy of the weights;
    ai_edge_litert's Interpreter packs them once per signature (Qwen2.5-0.5B int8: 1.9 GiB against 0.8)."""
    from zoo.runtime.model import LiteModel

    t = prefill_length(len(prompt), list(export.prefill_lens))
    body = prompt[:-1]
    lite = LiteModel(path, export.kv_layout, threads, [t])
    try:
        lite.reset()
        ours = lite.step(f"prefill_{t}", body, 0)[0] if body else None
        got, positions = [], []  # prefill logits only at real prompt positions: padding slots are not an output
        if export.prefill_logits is PrefillLogits.all and body:
            got.append(ours[: len(body)])
            positions += range(len(body))
        elif export.prefill_logits is PrefillLogits.last and len(body) == t:
            got.append(ours)
            positions.append(t - 1)
        sequence = list(prompt)
        for step in range(export.check_steps):
            pos = len(sequence) - 1
            logits = lite.step("decode", [sequence[-1]], pos)[0]
            got.append(logits)
            positions.append(pos)
            if step < export.check_steps - 1:
                sequence.append(int(logits[-1].argmax()))
    finally:
        lite.close()
    return np.concatenate(got), positions, sequence
