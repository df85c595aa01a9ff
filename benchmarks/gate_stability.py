"""The golden gate's stability, as a benchmark (not a test): the default job's gate N times on a busy machine.

    python benchmarks/gate_stability.py [--runs 20] [--out gate_stability.json]

Loads the default entry (SmolLM2-135M, real weights) once, starts a process that keeps the machine busy with
float32 matrix products (the load under which the float32 gate flaked), then runs the run's own gate
(`pipeline.gate_result`) `--runs` times and records each max |logit diff|. Then it finds the smallest fault the gate
still catches: one weight of layer 15's down_proj perturbed by 10^-k for growing k until the gate passes.
Prints and writes a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def busy(stop) -> None:
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    while not stop.is_set():
        a = (a @ a) / 512.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("gate_stability.json"))
    args = parser.parse_args()

    from zoo import pipeline
    from zoo.kinds import kind_of

    from conftest import compose_cfg

    cfg = compose_cfg(["resident_gib=2"])  # held in memory, so a fault put into a weight reaches the gate
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    stop = multiprocessing.Event()
    loaders = [multiprocessing.Process(target=busy, args=(stop,), daemon=True)]
    for p in loaders:
        p.start()
    diffs, failures, seconds = [], 0, []
    try:
        for i in range(args.runs):
            start = time.perf_counter()
            result = pipeline.gate_result(cfg, loaded)
            section = result.to_report()
            seconds.append(time.perf_counter() - start)
            diffs.append(section["max_abs_diff"])
            failures += not result.passed
            print(
                f"run {i + 1}: max |diff| {section['max_abs_diff']:.3e} "
                f"decode {section['decode_vs_full_max_abs_diff']:.3e}"
                f" greedy {section['greedy_tokens_equal']} {'PASS' if section['passed'] else 'FAIL'} "
                f"({seconds[-1]:.0f} s)",
                flush=True,
            )
        weight = loaded.model.model.layers[15].mlp.down_proj.weight
        original = weight.data[0, 0].item()
        caught = {}
        for k in range(2, 9):
            weight.data[0, 0] = original + 10.0**-k
            section = pipeline.gate_result(cfg, loaded).to_report()
            caught[f"1e-{k}"] = {"max_abs_diff": section["max_abs_diff"], "caught": not section["passed"]}
            print(
                f"fault 1e-{k} on down_proj[15][0,0]: max |diff| {section['max_abs_diff']:.3e} "
                f"{'caught' if not section['passed'] else 'passes'}",
                flush=True,
            )
            if section["passed"]:
                break
        weight.data[0, 0] = original
    finally:
        stop.set()
    summary = {
        "runs": args.runs,
        "failures": failures,
        "max_abs_diff": {"min": min(diffs), "median": float(np.median(diffs)), "max": max(diffs)},
        "atol": cfg.golden.atol,
        "gate_seconds_median": float(np.median(seconds)),
        "faults": caught,
        "diffs": diffs,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "diffs"}, indent=2))


if __name__ == "__main__":
    main()
