"""Decode overhead of our loop against the interpreter alone, measured side by side in one process.

`invoke` is the bare decode run with the inputs left as they are (caches aliased in place, as in every step);
`loop` is a full step of the generate loop (write token, position and mask, run, read the logits, greedy pick). Both run in alternating
blocks over the same positions so machine noise hits them alike; figures are medians per step.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from zoo.runtime.model import LiteModel


def decode_overhead(model: LiteModel, steps: int = 64, blocks: int = 5, start: int = 16) -> dict[str, float]:
    """Median seconds per decode step of the bare invoke and of our loop step, and their ratios."""
    times = {key: [] for key in ("invoke", "loop", "invoke_cpu", "loop_cpu")}

    def timed(key: str, fn) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times[f"{key}_cpu"].append(time.process_time() - cpu)
        times[key].append(time.perf_counter() - wall)

    for _ in range(blocks):
        model.step("decode", [0], start)  # inputs hold a real step for the bare invokes
        for _ in range(steps):
            timed("invoke", lambda: model.invoke_only("decode"))
        token = [0]
        for pos in range(start, start + steps):
            timed("loop", lambda pos=pos, token=token: token.append(int(np.argmax(model.step("decode", token[-1:], pos)[0, -1]))))
    med = {key: statistics.median(values) for key, values in times.items()}
    return {**{f"{k}_s": v for k, v in med.items()}, "ratio": med["loop"] / med["invoke"],
            "cpu_ratio": med["loop_cpu"] / med["invoke_cpu"], "invoke_tps": 1 / med["invoke"],
            "loop_tps": 1 / med["loop"], "steps": steps * blocks}


def prefill_speed(model: LiteModel, blocks: int = 5) -> dict[str, float]:
    """Median seconds of one full call of the largest prefill signature: bare invoke and our step (T tokens)."""
    t = model.prefill_lens[-1]
    sig, tokens = f"prefill_{t}", list(range(1, t + 1))
    invoke, ours = [], []
    clock = time.perf_counter
    for _ in range(blocks):
        start = clock()
        model.step(sig, tokens, 0, logits=False)
        ours.append(clock() - start)
        start = clock()
        model.invoke_only(sig)
        invoke.append(clock() - start)
    inv, step = statistics.median(invoke), statistics.median(ours)
    return {"tokens": t, "invoke_s": inv, "loop_s": step, "invoke_tps": t / inv, "loop_tps": t / step}


def litert_lm_speed(bundle: str, prefill_tokens: int, decode_tokens: int, threads: int = 2) -> dict[str, float]:
    """LiteRT-LM's own benchmark of a .litertlm bundle (prefill and decode tokens/s) on the CPU backend."""
    import litert_lm

    info = litert_lm.Benchmark(model_path=bundle, backend=litert_lm.Backend.CPU(thread_count=threads),
                               prefill_tokens=prefill_tokens, decode_tokens=decode_tokens).run()
    return {"prefill_tps": info.last_prefill_tokens_per_second, "decode_tps": info.last_decode_tokens_per_second}


if __name__ == "__main__":  # python -m zoo.runtime.speed MODEL.tflite btnh|transposed [BUNDLE.litertlm]
    import sys

    lite = LiteModel(sys.argv[1], sys.argv[2])
    print("decode", decode_overhead(lite))
    print("prefill", prefill_speed(lite))
    if len(sys.argv) > 3:
        print("litert-lm", litert_lm_speed(sys.argv[3], lite.prefill_lens[-1], 64))
