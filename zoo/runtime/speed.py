"""Decode overhead of our loop against the interpreter alone, measured side by side in one process.

`invoke` is the bare decode invoke with the inputs left as they are; `loop` is a full step of the generate loop
(write token, position and mask, invoke, copy back the written cache slots, greedy pick). Both run in alternating
blocks over the same positions so machine noise hits them alike; figures are medians per step.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from zoo.runtime.model import LiteModel


def decode_overhead(model: LiteModel, steps: int = 64, blocks: int = 5, start: int = 16) -> dict[str, float]:
    """Median seconds per decode step of the bare invoke and of our loop step, and their ratio."""
    invoke, loop = [], []
    clock = time.perf_counter
    for _ in range(blocks):
        model.step("decode", [0], start)  # inputs hold a real step for the bare invokes
        for _ in range(steps):
            t = clock()
            model.invoke_only("decode")
            invoke.append(clock() - t)
        token = 0
        for pos in range(start, start + steps):
            t = clock()
            token = int(np.argmax(model.step("decode", [token], pos)[0, -1]))
            loop.append(clock() - t)
    inv, ours = statistics.median(invoke), statistics.median(loop)
    return {"invoke_s": inv, "loop_s": ours, "ratio": ours / inv,
            "invoke_tps": 1 / inv, "loop_tps": 1 / ours, "steps": steps * blocks}
