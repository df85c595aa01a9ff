"""The `bench` stage: how fast the flatbuffer runs here, how much memory its runtime needs, and against what bound.

The interpreter is timed in a child process (`python -m zoo.bench SPEC OUT`) that imports only numpy and
ai_edge_litert: its peak RSS (VmHWM of its own address space) is the runtime's own, where the parent's would include
PyTorch, the checkpoint and the converter's leftovers; and its timings do not share an address space with the exporter. Each
signature is timed two ways, medians after a warm-up:
- invoke only: inputs set once by the signature runner, then `Invoke()` of its subgraph (the kernels alone);
- runner: the Python signature runner's call, which copies every input in and every output out (a real loop in
  Python feeds each step's caches back, as `runner` decode does here).
Decode speed is also put against the memory-bandwidth bound: a decode step reads at least every weight byte of the
file (and, with the KV cache, all of its bytes), so `read bandwidth / bytes per step` caps tokens per second.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zoo.progress import progress
from zoo.report import peak_rss_bytes


def median_seconds(fn, warmup: int, repeats: int, desc: str = "") -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in progress(range(repeats), desc):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth(mib: int, threads: int, repeats: int = 7) -> float:
    """Bytes per second of a numpy max-reduction over `mib` MiB split across `threads` (numpy releases the GIL)."""
    data = np.ones(mib * 2**20 // 4, np.float32)
    chunks = np.array_split(data, threads)
    with ThreadPoolExecutor(threads) as pool:
        seconds = median_seconds(lambda: list(pool.map(np.max, chunks)), 1, repeats)
    return data.nbytes / seconds


# --- the child process: interpreter only -------------------------------------------------------------------------

def interpreter_bench(spec: dict, feeds: dict[str, np.ndarray]) -> dict:
    """Prefill and decode speeds of the flatbuffer at `spec['path']`; `feeds` holds the non-cache inputs."""
    from ai_edge_litert.interpreter import Interpreter

    baseline = peak_rss_bytes()  # python, numpy and the interpreter module, before the model
    interpreter = Interpreter(model_path=spec["path"], num_threads=spec["threads"])
    cache = {name: np.zeros(shape, np.float32) for name, shape in spec["cache_shapes"].items()}
    warmup, repeats = spec["warmup"], spec["repeats"]
    out: dict = {"prefill": {}}
    for t in spec["prefill_lens"]:
        runner = interpreter.get_signature_runner(f"prefill_{t}")
        feed = {k[len(f"prefill_{t}/"):]: v for k, v in feeds.items() if k.startswith(f"prefill_{t}/")} | cache
        runner_s = median_seconds(lambda r=runner, f=feed: r(**f), warmup, repeats, f"bench prefill_{t} runner")
        invoke_s = invoke_seconds(runner, feed, warmup, repeats, f"bench prefill_{t} invoke")
        out["prefill"][str(t)] = {"tokens": t, "invoke_s": invoke_s, "runner_s": runner_s,
                                  "invoke_tok_s": t / invoke_s, "runner_tok_s": t / runner_s}
    decode = interpreter.get_signature_runner("decode")
    steps = [{k.split("/")[2]: v for k, v in feeds.items() if k.startswith(f"decode/{i}/")}
             for i in range(warmup + spec["decode_steps"])]
    invoke_s = invoke_seconds(decode, steps[0] | cache, warmup, spec["decode_steps"], "bench decode invoke")
    step_times, state = [], cache
    for i, step in enumerate(progress(steps, "bench decode runner")):
        start = time.perf_counter()
        result = decode(**step, **state)
        state = {name: result[name] for name in cache}  # the next step reads this step's caches, as a real loop does
        if i >= warmup:
            step_times.append(time.perf_counter() - start)
    runner_s = statistics.median(step_times)
    out["decode"] = {"start_position": spec["decode_start"], "steps": spec["decode_steps"], "invoke_s": invoke_s,
                     "runner_s": runner_s, "invoke_tok_s": 1 / invoke_s, "runner_tok_s": 1 / runner_s}
    out["runtime_baseline_rss_bytes"] = baseline
    out["runtime_peak_rss_bytes"] = peak_rss_bytes()
    return out


def invoke_seconds(runner, feed: dict, warmup: int, repeats: int, desc: str) -> float:
    """Median time of the runner's subgraph `Invoke()` alone, inputs set once by one ordinary call."""
    runner(**feed)
    wrapper, subgraph = runner._interpreter_wrapper, runner._subgraph_index
    return median_seconds(lambda: wrapper.Invoke(subgraph), warmup, repeats, desc)


def main(argv: list[str]) -> None:
    """`python -m zoo.bench SPEC.json OUT.json`: the child side of `run_interpreter_bench`."""
    spec_path, out_path = map(Path, argv)
    spec = json.loads(spec_path.read_text())
    with np.load(spec_path.with_suffix(".npz")) as data:
        feeds = {k: data[k] for k in data.files}
    out_path.write_text(json.dumps(interpreter_bench(spec, feeds)))


# --- the parent: inputs, child process, reference, bounds ---------------------------------------------------------

def run_interpreter_bench(path: Path, model, export, bench, threads: int) -> dict:
    """Build the inputs here (they need the model's cache shapes and mask rule), time them in a child process."""
    from zoo.check import step_inputs

    rng = np.random.default_rng(0)
    vocab = model.arch.vocab_size
    feeds = {}
    for t in export.prefill_lens:
        tokens = rng.integers(vocab, size=t).tolist()
        feeds |= {f"prefill_{t}/{k}": v for k, v in step_inputs(tokens, list(range(t)), [], export).items()}
    n = bench.warmup + bench.decode_steps
    start = max(0, min(max(export.prefill_lens), export.kv_cache_max - n))  # decode right after the longest prompt
    for i in range(n):
        step = step_inputs([int(rng.integers(vocab))], [start + i], [], export)
        feeds |= {f"decode/{i}/{k}": v for k, v in step.items()}
    k_shape, v_shape = model.kv_shapes(export.kv_cache_max)
    cache_shapes = {f"kv_cache_{kind}_{i}": list(k_shape if kind == "k" else v_shape)
                    for i in range(model.arch.num_layers) for kind in ("k", "v")}
    spec = {"path": str(path), "threads": threads, "prefill_lens": list(export.prefill_lens),
            "cache_shapes": cache_shapes, "warmup": bench.warmup, "repeats": bench.repeats,
            "decode_steps": bench.decode_steps, "decode_start": start}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        np.savez(spec_path.with_suffix(".npz"), **feeds)
        done = subprocess.run([sys.executable, "-m", "zoo.bench", str(spec_path), str(out_path)],
                              check=False, stdout=subprocess.DEVNULL, stderr=None if sys.stderr.isatty() else subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
        if done.returncode != 0:
            raise RuntimeError(f"bench child process failed (exit {done.returncode}): {(done.stderr or '')[-2000:]}")
        return json.loads(out_path.read_text())


def reference_bench(hf, vocab: int, prefill_lens: list[int], bench) -> dict:
    """transformers (eager, float32) on the same weights: prefill of each length, then single-token decode steps."""
    import torch

    gen = torch.Generator().manual_seed(0)
    out: dict = {"prefill": {}}
    with torch.no_grad():
        for t in prefill_lens:
            ids = torch.randint(vocab, (1, t), generator=gen)
            seconds = median_seconds(lambda i=ids: hf(input_ids=i, use_cache=True), bench.warmup, bench.repeats,
                                     f"bench transformers prefill {t}")
            out["prefill"][str(t)] = {"tokens": t, "seconds": seconds, "tok_s": t / seconds}
        past = hf(input_ids=torch.randint(vocab, (1, max(prefill_lens)), generator=gen), use_cache=True).past_key_values
        token = torch.randint(vocab, (1, 1), generator=gen)
        step = lambda: hf(input_ids=token, past_key_values=past, use_cache=True)
        seconds = median_seconds(step, bench.warmup, bench.decode_steps, "bench transformers decode")
    out["decode"] = {"seconds": seconds, "tok_s": 1 / seconds}
    return out


def weight_bytes(model, quant) -> int:
    """The weights' own bytes at the recipe's precision: matrices at their component's mode (with one float32
    scale per output row for int8, per block for int4), everything else float32 (fp16 halves all)."""
    import re

    from zoo.export.quantize import COMPONENTS

    per_value = {"none": 4.0, "fp16": 2.0, "int8_dynamic": 1.0, "int8_weight_only": 1.0,
                 "int4_block32": 0.5 + 4 / 32, "int4_block128": 0.5 + 4 / 128}
    total = 0.0
    for name, p in model.named_parameters():  # a tied table is one parameter, counted once
        if quant.mode.value == "fp16":
            total += 2 * p.numel()
            continue
        if p.dim() < 2:
            total += 4 * p.numel()
            continue
        component = next((c for c, pattern in COMPONENTS.items() if re.search(pattern, name)), None)
        mode = (getattr(quant.components, component) if component else None) or quant.mode
        total += per_value[mode.value] * p.numel() + (4 * p.shape[0] if mode.value.startswith("int8") else 0)
    return int(total)


def kv_cache_bytes(model, kv_max: int) -> int:
    k_shape, v_shape = model.kv_shapes(kv_max)
    return model.arch.num_layers * 4 * (int(np.prod(k_shape)) + int(np.prod(v_shape)))


def bandwidth_section(bandwidth: float, size_bytes: int, kv_bytes: int, decode_tok_s: float) -> dict:
    bound, bound_kv = bandwidth / size_bytes, bandwidth / (size_bytes + kv_bytes)
    return {"read_bytes_per_s": bandwidth, "file_bytes": size_bytes, "kv_cache_bytes": kv_bytes,
            "bound_tok_s": bound, "bound_with_kv_tok_s": bound_kv,
            "decode_fraction_of_bound": decode_tok_s / bound, "decode_fraction_of_bound_with_kv": decode_tok_s / bound_kv}


def target_records(report: dict, target) -> list[dict]:
    """Figure, target and ratio (figure / target; >= 1 meets a higher-is-better target, <= 1 a lower-is-better one)."""
    exp, bench = report.get("export", {}), report.get("bench", {})
    prefill = bench.get("prefill_tok_s", {}).get(str(target.prefill_len))
    rows = [("decode_tok_s", bench.get("decode_tok_s"), target.decode_tok_s, "higher"),
            (f"prefill_tok_s@{target.prefill_len}", prefill, target.prefill_tok_s, "higher"),
            ("convert_seconds", exp.get("convert_seconds"), target.convert_seconds, "lower"),
            ("convert_peak_rss_gib", exp.get("convert_peak_rss_bytes", 0) / 2**30 or None, target.convert_peak_rss_gib,
             "lower"),
            ("size_vs_weights", bench.get("size_vs_weights"), target.size_vs_weights, "lower")]
    records = []
    for figure, value, goal, better in rows:
        if goal is None:
            continue
        ratio = None if value is None else value / goal
        met = None if ratio is None else (ratio >= 1 if better == "higher" else ratio <= 1)
        records.append({"figure": figure, "value": value, "target": goal, "ratio": ratio, "better": better, "met": met})
    return records


def run_bench(cfg, model, hf_factory, path: Path, size_bytes: int) -> dict:
    """The report's `bench` section; `hf_factory()` builds the transformers model when `bench.reference` asks."""
    lite = run_interpreter_bench(path, model, cfg.export, cfg.bench, cfg.threads)
    section = {
        "threads": cfg.threads,
        "ttft_s": lite["prefill"][str(min(cfg.export.prefill_lens))]["runner_s"]
        + (lite["decode"]["runner_s"] if cfg.export.prefill_logits.value == "none" else 0.0),
        "prefill_tok_s": {t: v["invoke_tok_s"] for t, v in lite["prefill"].items()},
        "prefill_runner_tok_s": {t: v["runner_tok_s"] for t, v in lite["prefill"].items()},
        "decode_tok_s": lite["decode"]["invoke_tok_s"],
        "decode_runner_tok_s": lite["decode"]["runner_tok_s"],
        "runtime_peak_rss_bytes": lite["runtime_peak_rss_bytes"],
        "runtime_baseline_rss_bytes": lite["runtime_baseline_rss_bytes"],
        "interpreter": lite,
    }
    weights = weight_bytes(model, cfg.quant)
    section |= {"weight_bytes": weights, "size_vs_weights": size_bytes / weights}
    bandwidth = read_bandwidth(cfg.bench.bandwidth_mib, cfg.threads)
    section["bandwidth"] = bandwidth_section(bandwidth, size_bytes, kv_cache_bytes(model, cfg.export.kv_cache_max),
                                             section["decode_tok_s"])
    if cfg.bench.reference:
        ref = reference_bench(hf_factory(), model.arch.vocab_size, list(cfg.export.prefill_lens), cfg.bench)
        section["reference"] = ref  # speed-ups: runner calls (a Python call with copies on both sides)
        section["speedup_vs_reference"] = {
            "decode": section["decode_runner_tok_s"] / ref["decode"]["tok_s"],
            "prefill": {t: section["prefill_runner_tok_s"][t] / ref["prefill"][t]["tok_s"] for t in ref["prefill"]}}
    return section


if __name__ == "__main__":
    main(sys.argv[1:])
