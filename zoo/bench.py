"""The `bench` stage: how fast the flatbuffer runs here, how much memory its runtime needs, and against what bound.

The flatbuffer is timed in zoo's own runtime (`zoo.runtime.LiteModel`: LiteRT's CompiledModel, KV caches updated in
place) in a child process (`python -m zoo.bench SPEC OUT`) that imports only numpy, ai_edge_litert and the runtime: its
peak RSS (VmHWM of its own address space) is the runtime's own, where the parent's would include PyTorch, the
checkpoint and the converter's leftovers; and its timings do not share an address space with the exporter. Each
signature is timed invoke-only and as a step of the generate loop (`zoo.runtime.speed`).
Decode speed is also put against the memory-bandwidth bound: a decode step reads at least every weight byte of the
file (and, with the KV cache, all of its bytes), so `read bandwidth / bytes per step` caps tokens per second.
"""

from __future__ import annotations

import json
import mmap
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zoo.progress import progress
from zoo.resources import peak_rss_bytes
from zoo.runtime.model import LiteModel
from zoo.runtime.speed import decode_speed, prefill_speed


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


# --- the child process: the runtime only ------------------------------------------------------------------------


def runtime_bench(spec: dict) -> dict:
    """Prefill and decode speeds of the flatbuffer at `spec['path']` in zoo's runtime (`LiteModel`), and its RSS."""
    import ai_edge_litert.compiled_model  # noqa: F401  (in the baseline, as numpy is)

    baseline = peak_rss_bytes()  # python, numpy, LiteRT's module and the config schema, before the model
    lite = LiteModel(spec["path"], spec["kv_layout"], spec["threads"])
    out: dict = {
        "prefill": {
            str(len(tokens)): prefill_speed(lite, tokens, spec["warmup"], spec["repeats"])
            for tokens in spec["prefill_tokens"]
        }
    }
    out["decode"] = decode_speed(lite, spec["decode_tokens"], spec["decode_start"], spec["warmup"])
    out["runtime_baseline_rss_bytes"] = baseline
    out["runtime_peak_rss_bytes"] = peak_rss_bytes()
    return out


def main(argv: list[str]) -> None:
    """`python -m zoo.bench SPEC.json OUT.json`: the child side of `run_runtime_bench`."""
    spec_path, out_path = map(Path, argv)
    out_path.write_text(json.dumps(runtime_bench(json.loads(spec_path.read_text()))))


# --- the parent: inputs, child process, reference, bounds ---------------------------------------------------------


def bench_spec(
    path: Path | str,
    layout: str,
    threads: int,
    vocab: int,
    prefill_lens,
    decode_steps: int,
    start: int,
    warmup: int,
    repeats: int,
) -> dict:
    """The child's input: seeded random tokens for each prefill length and for `warmup + decode_steps` decode steps
    from position `start` (decode times the tokens past warmup)."""
    rng = np.random.default_rng(0)
    return {
        "path": str(path),
        "kv_layout": layout,
        "threads": threads,
        "prefill_tokens": [rng.integers(vocab, size=t).tolist() for t in prefill_lens],
        "decode_tokens": rng.integers(vocab, size=warmup + decode_steps).tolist(),
        "decode_start": start,
        "warmup": warmup,
        "repeats": repeats,
    }


def run_runtime_bench(path: Path, model, export, bench, threads: int) -> dict:
    """Random tokens for each signature, timed in a child process; decode starts right after the longest prefill."""
    n = bench.warmup + bench.decode_steps
    start = max(0, min(max(export.prefill_lens), export.kv_cache_max - n))
    layout, vocab = export.kv_layout.value, model.arch.vocab_size
    return bench_child(
        bench_spec(
            path, layout, threads, vocab, export.prefill_lens, bench.decode_steps, start, bench.warmup, bench.repeats
        )
    )


def bench_child(spec: dict) -> dict:
    """`runtime_bench(spec)` run in a child process (`python -m zoo.bench SPEC OUT`): the runtime's own RSS."""
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, "-m", "zoo.bench", str(spec_path), str(out_path)],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=None if sys.stderr.isatty() else subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            start_new_session=True,
        )  # Ctrl-C reaches zoo only, which stops the child quietly
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
            seconds = median_seconds(
                lambda i=ids: hf(input_ids=i, use_cache=True),
                bench.warmup,
                bench.repeats,
                f"bench transformers prefill {t}",
            )
            out["prefill"][str(t)] = {"tokens": t, "seconds": seconds, "tok_s": t / seconds}
        past = hf(input_ids=torch.randint(vocab, (1, max(prefill_lens)), generator=gen), use_cache=True).past_key_values
        token = torch.randint(vocab, (1, 1), generator=gen)
        seconds = median_seconds(
            lambda: hf(input_ids=token, past_key_values=past, use_cache=True),
            bench.warmup,
            bench.decode_steps,
            "bench transformers decode",
        )
    out["decode"] = {"seconds": seconds, "tok_s": 1 / seconds}
    return out


def weight_bytes(model, quant, components) -> int:
    """The weights' own bytes at the recipe's precision: matrices at their component's mode (with one float32
    scale per output row for int8, per block for int4), everything else float32 (fp16 halves all); `components`:
    the kind's quant components (zoo/kinds/)."""
    from zoo.export.recipe import component_of

    per_value = {
        "none": 4.0,
        "fp16": 2.0,
        "int8_dynamic": 1.0,
        "int8_weight_only": 1.0,
        "int4_block32": 0.5 + 4 / 32,
        "int4_block64": 0.5 + 4 / 64,
        "int4_block128": 0.5 + 4 / 128,
    }
    total = 0.0
    for name, p in model.named_parameters():  # a tied table is one parameter, counted once
        if quant.mode.value == "fp16":
            total += 2 * p.numel()
            continue
        if p.dim() < 2:
            total += 4 * p.numel()
            continue
        component = component_of(name, components)
        mode = (getattr(quant.components, component) if component else None) or quant.mode
        total += per_value[mode.value] * p.numel() + (4 * p.shape[0] if mode.value.startswith("int8") else 0)
    return int(total)


def kv_cache_bytes(model, kv_max: int) -> int:
    k_shape, v_shape = model.kv_shapes(kv_max)
    return model.arch.num_layers * 4 * (int(np.prod(k_shape)) + int(np.prod(v_shape)))


def bandwidth_section(bandwidth: float, size_bytes: int, kv_bytes: int, decode_tok_s: float) -> dict:
    bound, bound_kv = bandwidth / size_bytes, bandwidth / (size_bytes + kv_bytes)
    return {
        "read_bytes_per_s": bandwidth,
        "file_bytes": size_bytes,
        "kv_cache_bytes": kv_bytes,
        "bound_tok_s": bound,
        "bound_with_kv_tok_s": bound_kv,
        "decode_fraction_of_bound": decode_tok_s / bound,
        "decode_fraction_of_bound_with_kv": decode_tok_s / bound_kv,
    }


def target_records(exp: dict, bench: dict, target) -> list[dict]:
    """Figure, target and ratio (figure / target; >= 1 meets a higher-is-better target, <= 1 a lower-is-better one)
    of the report's `export` and `bench` sections."""
    prefill = bench.get("prefill_tok_s", {}).get(str(target.prefill_len))
    rows = [
        ("decode_tok_s", bench.get("decode_tok_s"), target.decode_tok_s, "higher"),
        (f"prefill_tok_s@{target.prefill_len}", prefill, target.prefill_tok_s, "higher"),
        ("convert_seconds", exp.get("convert_seconds"), target.convert_seconds, "lower"),
        (
            "convert_peak_rss_gib",
            exp.get("convert_peak_rss_bytes", 0) / 2**30 or None,
            target.convert_peak_rss_gib,
            "lower",
        ),
        ("size_vs_weights", bench.get("size_vs_weights"), target.size_vs_weights, "lower"),
    ]
    records = []
    for figure, value, goal, better in rows:
        if goal is None:
            continue
        ratio = None if value is None else value / goal
        met = None if ratio is None else (ratio >= 1 if better == "higher" else ratio <= 1)
        records.append({"figure": figure, "value": value, "target": goal, "ratio": ratio, "better": better, "met": met})
    return records


def step_ops(path: Path) -> dict[str, dict]:
    """Per signature: the ops one call runs and how many are FULLY_CONNECTED (a decode step's count beyond its
    weight matrices is what it runs besides them)."""
    from zoo.export.convert import op_counts
    from zoo.export.private import schema

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:  # the table, not 7 GB
        model = schema.Model.GetRootAsModel(data, 0)
        signatures = [model.SignatureDefs(i).SignatureKey().decode() for i in range(model.SignatureDefsLength())]
        counts = {s: op_counts(data, s) for s in signatures}
    return {s: {"total": sum(c.values()), "fully_connected": c["FULLY_CONNECTED"]} for s, c in counts.items()}


def run_bench(cfg, kind, model, hf_factory, path: Path, size_bytes: int) -> dict:
    """The report's `bench` section; `hf_factory()` builds the transformers model when `bench.reference` asks;
    `kind`: the entry's ModelKind (its quantization components)."""
    lite = run_runtime_bench(path, model, cfg.export, cfg.bench, cfg.threads)
    section = {
        "threads": cfg.threads,
        # our loop: prefill of all prompt tokens but the last, decode of the last gives the first logits
        "ttft_s": lite["prefill"][str(min(cfg.export.prefill_lens))]["loop_s"] + lite["decode"]["loop_s"],
        "prefill_tok_s": {t: v["invoke_tok_s"] for t, v in lite["prefill"].items()},
        "prefill_loop_tok_s": {t: v["loop_tok_s"] for t, v in lite["prefill"].items()},
        "decode_tok_s": lite["decode"]["invoke_tok_s"],
        "decode_loop_tok_s": lite["decode"]["loop_tok_s"],
        "decode_loop_over_invoke": lite["decode"]["ratio"],  # the loop's own overhead, at the same positions
        "runtime_peak_rss_bytes": lite["runtime_peak_rss_bytes"],
        "runtime_baseline_rss_bytes": lite["runtime_baseline_rss_bytes"],
        "runtime": lite,
    }
    section["ops"] = step_ops(path)
    weights = weight_bytes(model, cfg.quant, kind.components)
    section |= {"weight_bytes": weights, "size_vs_weights": size_bytes / weights}
    bandwidth = read_bandwidth(cfg.bench.bandwidth_mib, cfg.threads)
    section["bandwidth"] = bandwidth_section(
        bandwidth, size_bytes, kv_cache_bytes(model, cfg.export.kv_cache_max), section["decode_tok_s"]
    )
    if cfg.bench.reference:
        ref = reference_bench(hf_factory(), model.arch.vocab_size, list(cfg.export.prefill_lens), cfg.bench)
        section["reference"] = ref  # speed-ups: our loop's steps (inputs written, logits read) over forward calls
        section["speedup_vs_reference"] = {
            "decode": section["decode_loop_tok_s"] / ref["decode"]["tok_s"],
            "prefill": {t: section["prefill_loop_tok_s"][t] / ref["prefill"][t]["tok_s"] for t in ref["prefill"]},
        }
    return section


if __name__ == "__main__":
    main(sys.argv[1:])
