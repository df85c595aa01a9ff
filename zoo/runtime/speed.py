"""How fast a flatbuffer runs in our runtime and in LiteRT-LM: the timings behind the `bench` stage and a CLI.

Each signature is timed two ways:
- invoke only: a run of the signature on the inputs already written (caches aliased in place): the kernels alone;
- loop: a full step of the generate loop (tokens, positions and mask written, run, for decode the logits read and
  the greedy pick).
Decode positions advance as in generation, and the bare decode run is timed right after each loop step on the
inputs that step wrote: the same position, so both read the same number of cache slots and machine noise hits them
alike. Figures are medians after a warm-up.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from zoo.progress import progress
from zoo.runtime.model import LiteModel


def median_seconds(fn, warmup: int, repeats: int, desc: str = "") -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in progress(range(repeats), desc):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prefill_speed(model: LiteModel, tokens: list[int], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of the prefill signature of len(tokens) from position 0: our step and the bare invoke."""
    t = len(tokens)
    sig = f"prefill_{t}"
    loop_s = median_seconds(lambda: model.step(sig, tokens, 0, logits=False), warmup, repeats, f"bench {sig} loop")
    invoke_s = median_seconds(lambda: model.invoke_only(sig), warmup, repeats, f"bench {sig} invoke")
    return {"tokens": t, "invoke_s": invoke_s, "loop_s": loop_s, "invoke_tok_s": t / invoke_s, "loop_tok_s": t / loop_s}


def decode_speed(model: LiteModel, tokens: list[int], start: int, warmup: int) -> dict[str, float]:
    """Median seconds per decode step of our loop and of the bare invoke at the same positions (start, start+1, ...).

    The first `warmup` tokens are run untimed. `ratio` is loop over invoke: the loop's own overhead.
    """
    times: dict[str, list[float]] = {"loop": [], "invoke": []}
    for i, token in enumerate(progress(tokens, "bench decode")):
        begin = time.perf_counter()
        int(np.argmax(model.step("decode", [token], start + i)[0, -1]))
        middle = time.perf_counter()
        model.invoke_only("decode")
        if i >= warmup:
            times["loop"].append(middle - begin)
            times["invoke"].append(time.perf_counter() - middle)
    loop_s, invoke_s = statistics.median(times["loop"]), statistics.median(times["invoke"])
    return {"start_position": start, "steps": len(times["loop"]), "invoke_s": invoke_s, "loop_s": loop_s,
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
