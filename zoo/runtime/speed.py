"""How fast a flatbuffer runs in our runtime and in LiteRT-LM: the timings behind the `bench` stage and a CLI.

Each signature is timed two ways:
- invoke only: a run of the signature on the inputs already written (caches aliased in place): the kernels alone;
- loop: a full step of the generate loop (tokens, positions and mask written, run, for decode the logits read and
  the greedy pick).
The bare run is timed right after each loop step on the inputs that step wrote: the same work (for decode the same
position, as positions advance as in generation, so both read the same number of cache slots), and machine noise
hits both alike. Figures are medians after a warm-up.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from zoo.progress import progress
from zoo.runtime.model import LiteModel


def _paired(model: LiteModel, signature: str, steps, warmup: int, desc: str) -> tuple[float, float, int]:
    """Median seconds of each of `steps` (our loop's steps) and of the bare run right after it, past `warmup`."""
    loop, invoke = [], []
    for i, step in enumerate(progress(steps, desc)):
        begin = time.perf_counter()
        step()
        middle = time.perf_counter()
        model.invoke_only(signature)
        if i >= warmup:
            loop.append(middle - begin)
            invoke.append(time.perf_counter() - middle)
    return statistics.median(loop), statistics.median(invoke), len(loop)


def prefill_speed(model: LiteModel, tokens: list[int], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of the prefill signature of len(tokens) from position 0: our step and the bare invoke."""
    t = len(tokens)
    sig = f"prefill_{t}"
    steps = [lambda: model.step(sig, tokens, 0, logits=False)] * (warmup + repeats)
    loop_s, invoke_s, _ = _paired(model, sig, steps, warmup, f"bench {sig}")
    return {"tokens": t, "invoke_s": invoke_s, "loop_s": loop_s, "invoke_tok_s": t / invoke_s, "loop_tok_s": t / loop_s}


def decode_speed(model: LiteModel, tokens: list[int], start: int, warmup: int) -> dict[str, float]:
    """Median seconds per decode step of our loop and of the bare invoke at the same positions (start, start+1, ...).

    The first `warmup` tokens are run untimed. `ratio` is loop over invoke: the loop's own overhead.
    """
    steps = [lambda i=i, token=token: int(np.argmax(model.step("decode", [token], start + i)[0, -1]))
             for i, token in enumerate(tokens)]
    loop_s, invoke_s, n = _paired(model, "decode", steps, warmup, "bench decode")
    return {"start_position": start, "steps": n, "invoke_s": invoke_s, "loop_s": loop_s,
            "invoke_tok_s": 1 / invoke_s, "loop_tok_s": 1 / loop_s, "ratio": loop_s / invoke_s}


def litert_lm_speed(bundle: str, prefill_tokens: int, decode_tokens: int, threads: int = 2) -> dict[str, float]:
    """LiteRT-LM's own benchmark of a .litertlm bundle (prefill and decode tokens/s) on the CPU backend."""
    import litert_lm

    info = litert_lm.Benchmark(model_path=bundle, backend=litert_lm.Backend.CPU(thread_count=threads),
                               prefill_tokens=prefill_tokens, decode_tokens=decode_tokens).run()
    return {"prefill_tps": info.last_prefill_tokens_per_second, "decode_tps": info.last_decode_tokens_per_second}


if __name__ == "__main__":  # python -m zoo.runtime.speed MODEL.tflite btnh|transposed [BUNDLE.litertlm]
    import sys

    lite = LiteModel(sys.argv[1], sys.argv[2])
    rng = np.random.default_rng(0)
    t = lite.prefill_lens[-1]
    print("prefill", prefill_speed(lite, rng.integers(lite.vocab_size, size=t).tolist(), 3, 10))
    print("decode", decode_speed(lite, rng.integers(lite.vocab_size, size=3 + 128).tolist(), t, 3))
    if len(sys.argv) > 3:
        print("litert-lm", litert_lm_speed(sys.argv[3], t, 64))
