"""Full-size entries end to end on this machine, as a benchmark (not a test): each `python -m zoo` job in its own
process, its report.json read back into one table and a size/time plot.

    python benchmarks/full_size.py [--jobs model=gemma_2b,quant=int8_dynamic ...] [--out DIR] [--redo] [--render]

Each job is `python -m zoo <overrides>` with its own run directory under --out (default runs/full_size), or
`generate:<overrides>`, `python -m zoo.generate` filling one artifact cache, --out/cache; a job that fails is a row
with its error. A file over 2 GB is also loaded by ai_edge_litert's Interpreter for one decode step. Each job's
flatbuffer and bundles are deleted once measured (--keep-files keeps them). After every job, rows.json, table.md
and size_time.png in --out are rewritten: an interrupted benchmark keeps its rows and the next one runs only the
jobs without a row (all of them with --redo). The table: entry, parameters, recipe, file size, the run's peak RSS
(the largest stage peak, and its stage) against the budget of file + 3 GiB, seconds per stage, the gate's figures,
the check's (and eval's). The plot: stage seconds against parameters.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

# The issue-24 set, largest first: int4_block32 for every entry; the entry default (fp32) up to 1.2B parameters
# and int8_dynamic above (fp32 Mistral-7B would be a 29 GB file); the eval where real weights exist (SmolLM2).
# Mistral-7B's files (4-7 GB) also prove files past the flatbuffer's 2 GB: made through `zoo.generate` with a real
# 32k SentencePiece tokenizer (mistral-common's, Mistral-7B-v0.1's own) in the LiteRT-LM layout and bundle.
REAL = ",eval.enabled=true,eval.max_windows=4"


def big_file(recipe: str) -> str:
    return (
        f"generate:model=mistral_7b,quant={recipe},export=litertlm,model.tokenizer.source={{tokenizer32k}},"
        "model.tokenizer.chat_template=false"
    )


DEFAULT_JOBS = [
    big_file("int4_block32"),
    "model=phi3_5_mini,quant=int4_block32",
    "model=gemma2_2b,quant=int4_block32",
    "model=gemma_2b,quant=int4_block32",
    "model=llama3_2_1b,quant=int4_block32",
    "model=tinyllama,quant=int4_block32",
    "model=gemma3_270m,quant=int4_block32",
    "model=smollm2_135m,quant=int4_block32" + REAL,
    big_file("int8_dynamic"),
    "model=gemma_2b,quant=int8_dynamic",
    "model=llama3_2_1b,quant=none",
    "model=tinyllama,quant=none",
    "model=gemma3_270m,quant=none",
    "model=smollm2_135m,quant=none" + REAL,
    "model=gemma2_2b,quant=int8_dynamic",
    "model=phi3_5_mini,quant=int8_dynamic",
]
PROMPT = "The capital of France is"
STAGES = ("checkpoint", "load", "golden", "export", "check", "eval")


def run_job(job: str, run_dir: Path) -> dict:
    """`python -m zoo` into `run_dir`, or (a `generate:` job) `python -m zoo.generate`, which runs the same pipeline
    into an artifact cache under `run_dir` and then generates from the file; its report read back either way."""
    generate = job.startswith("generate:")
    overrides = job.removeprefix("generate:").split(",")
    start, started = time.perf_counter(), time.time()
    cache = run_dir.parent / "cache"  # one for every generate job: Mistral's 14 GB random snapshot is written once
    if generate:
        command = ["zoo.generate", *overrides, f"cache_dir={cache}", f"prompt={PROMPT}", "max_new_tokens=8"]
    else:
        command = ["zoo", *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    found = sorted(
        cache.glob("*/report.json") if generate else run_dir.glob("report.json"), key=lambda p: p.stat().st_mtime
    )
    report = json.loads(found[-1].read_text()) if found and found[-1].stat().st_mtime > started else {}
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    report["exit"] = proc.returncode
    report["stderr_tail"] = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    if generate and proc.returncode == 0:
        report["probes"] = [f"zoo.generate: {PROMPT!r} -> {proc.stdout.strip().splitlines()[0][:60]!r}"]
    return report


def tokenizer32k(out: Path) -> Path:
    """A transformers tokenizer folder around mistral-common's tokenizer.model.v1 (Mistral-7B-v0.1's 32k
    SentencePiece model; `pip install --no-deps mistral-common==1.13.1`)."""
    import importlib.util

    spec = importlib.util.find_spec("mistral_common")
    if spec is None:
        sys.exit("full_size.py: the Mistral-7B job needs mistral-common: pip install --no-deps mistral-common==1.13.1")
    folder = out / "tokenizer32k"
    folder.mkdir(parents=True, exist_ok=True)
    model = Path(spec.submodule_search_locations[0]) / "data" / "tokenizer.model.v1"
    (folder / "tokenizer.model").write_bytes(model.read_bytes())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


INTERPRETER = """
import resource, sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path=sys.argv[1], num_threads=2).get_signature_runner("decode")
out = runner(**{k: np.zeros(v["shape"], v["dtype"]) for k, v in runner.get_input_details().items()})
assert np.isfinite(out["logits"]).all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def interpreter_probe(path: Path) -> str:
    """A file over 2 GB loaded and one decode step run by ai_edge_litert's Interpreter (zoo's runtime ran the check)."""
    proc = subprocess.run([sys.executable, "-c", INTERPRETER, str(path)], capture_output=True, text=True)
    if proc.returncode:
        return f"Interpreter failed: {proc.stderr.strip().splitlines()[-1:]}"
    return f"Interpreter decode ok ({float(proc.stdout.split()[-1]):.1f} GiB)"


LITERT_LM = """
import sys, litert_lm
engine = litert_lm.Engine(sys.argv[1], litert_lm.Backend.CPU())
session = engine.create_session(apply_prompt_template=False, max_output_tokens=8)
session.run_prefill([sys.argv[2]])
print(repr(session.run_decode().texts[0]))
"""


def litert_lm_probe(bundle: Path) -> str:
    """LiteRT-LM's own engine generating from the .litertlm bundle."""
    proc = subprocess.run([sys.executable, "-c", LITERT_LM, str(bundle), PROMPT], capture_output=True, text=True)
    if proc.returncode:
        return f"LiteRT-LM failed: {proc.stderr.strip().splitlines()[-1:]}"
    return f"LiteRT-LM ({bundle.stat().st_size / 1e9:.2f} GB bundle) -> {proc.stdout.strip()[:60]}"


def quality(report: dict) -> str:
    """The check's KL and top-1 against the PyTorch model, and the eval's KLD on real text when it ran."""
    check, ev = report.get("check", {}), report.get("eval", {})
    text = f"KL {check['kl']:.4f}, top-1 {check['top1']:.2f}" if "kl" in check else ""
    if "simulated_kl" in check:
        text += f"; simulated KL {check['simulated_kl']:.4f}, bound {check['bounds']['kl']:.4f}"
    return text + (f"; eval KLD {ev['kld_mean']:.4f}" if "kld_mean" in ev else "")


def row(job: str, report: dict) -> dict:
    nan = float("nan")
    timings = report.get("timings", {})
    peaks = {s: round(t["peak_rss_bytes"] / 2**30, 2) for s, t in timings.items()}
    size = report.get("export", {}).get("size_bytes", 0) / 1e9
    gate = report.get("golden", {})
    return {
        "job": job,
        "params_b": report.get("num_params", 0) / 1e9,
        "streamed": report.get("streamed"),
        "file_gb": size,
        "peak_gib": max(peaks.values(), default=0),
        "peak_stage": max(peaks, key=peaks.get, default="-"),
        "peaks": peaks,
        "budget_gib": size * 1e9 / 2**30 + 3 if size else None,
        "seconds": {s: timings[s]["seconds"] for s in STAGES if s in timings},
        "wall": report.get("wall_seconds"),
        "gate": f"{gate.get('max_abs_diff', nan):.1e} / {max(gate.get('layers_max_rel_diff', [nan])):.1e}",
        "quality": quality(report),
        "exit": report.get("exit"),
        "error": " ".join(report.get("stderr_tail", [])),
        "probes": report.get("probes", []),
    }


def label(job: str) -> str:
    """`model quant (other overrides)`: the table's first column."""
    parts = [p for p in job.split(":")[-1].split(",") if not p.startswith(("model.tokenizer", "eval."))]
    named = [p.split("=", 1)[1] for p in parts if p.split("=", 1)[0] in ("model", "quant")]
    rest = [p for p in parts if p.split("=", 1)[0] not in ("model", "quant")]
    via = ["zoo.generate"] if job.startswith("generate:") else []
    return " ".join(named) + (f" ({', '.join(rest + via)})" if rest or via else "")


def result(r: dict) -> str:
    if r["exit"] == 0:
        return "; ".join(["ok", *r["probes"]])
    check = re.search(r"\[check\]: .*failed: (.*)", r["error"])
    return f"check FAIL: {check[1][:60]}" if check else f"exit {r['exit']}: {r['error'][:100]}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| job | params (B) | file (GB) | peak RSS (GiB, stage) | budget (GiB) | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | wall s | gate: logits max diff / layers max rel diff | check (and eval) | result |",
        "|" + "---|" * (10 + len(STAGES)),
    ]
    for r in rows:
        budget = f"{r['budget_gib']:.1f}" if r["budget_gib"] else "-"
        secs = " | ".join(f"{r['seconds'][s]:.0f}" if s in r["seconds"] else "-" for s in STAGES)
        lines.append(
            f"| {label(r['job'])} | {r['params_b']:.2f} | {r['file_gb']:.2f} | {r['peak_gib']:.2f} "
            f"({r.get('peak_stage', '-')}) | {budget} | {secs} | {r['wall']:.0f} | {r['gate']} | {r['quality']} | "
            f"{result(r)} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in ("golden", "export", "check"):
        points = sorted((r["params_b"], r["seconds"][stage]) for r in rows if stage in r["seconds"])
        if points:
            ax.plot(*zip(*points), marker="o", linestyle="none", label=stage)  # every recipe of a size: points
    ax.set_xlabel("parameters (billions)")
    ax.set_ylabel("seconds")
    ax.set_title("zoo stage time against model size (2 cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="*", default=DEFAULT_JOBS, help="comma-separated overrides per job")
    parser.add_argument("--out", type=Path, default=Path("runs/full_size"))
    parser.add_argument("--redo", action="store_true", help="run jobs that already have a row in --out/rows.json")
    parser.add_argument("--render", action="store_true", help="only rewrite table.md and the plot from rows.json")
    parser.add_argument("--keep-files", action="store_true", help="keep each job's flatbuffer and bundles")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "rows.json"
    rows = {r["job"]: r for r in (json.loads(saved.read_text()) if saved.exists() else [])}
    for job in [] if args.render else args.jobs:
        if job in rows and not args.redo:
            continue
        run_dir = run_dir_of(args.out, job)
        filled = job.format(tokenizer32k=tokenizer32k(args.out)) if "{tokenizer32k}" in job else job
        report = run_job(filled, run_dir)
        report.setdefault("probes", [])
        if report["exit"] == 0 and report["export"]["size_bytes"] > 2**31:
            report["probes"].append(interpreter_probe(Path(report["export"]["path"])))
        if report["exit"] == 0 and "litertlm" in report.get("bundles", {}):
            report["probes"].append(litert_lm_probe(Path(report["bundles"]["litertlm"]["path"])))
        rows[job] = row(job, report)
        print(markdown([rows[job]]).splitlines()[-1], flush=True)
        if not args.keep_files:  # 2-7 GB each: the disk would not hold every job's (reports and logs stay)
            made = [report.get("export", {}), *report.get("bundles", {}).values()]
            for path in [Path(m["path"]) for m in made if "path" in m]:
                for leftover in path.parent.glob(f"{path.name}*"):  # with LiteRT-LM's .xnnpack_cache beside it
                    leftover.unlink()
        write(rows, args.jobs, args.out)  # after every job: an interrupted benchmark keeps what it measured
    write(rows, args.jobs, args.out)


def run_dir_of(out: Path, job: str) -> Path:
    return out / re.sub(r"[^\w.=-]+", "_", job.split(":")[-1]).replace("=", "-")[:120]


def write(rows: dict[str, dict], jobs: list[str], out: Path) -> None:
    """rows.json, table.md and size_time.png in `out`, the rows in `jobs` order (then any others)."""
    ordered = [rows[j] for j in jobs if j in rows] + [r for j, r in rows.items() if j not in jobs]
    (out / "rows.json").write_text(json.dumps(ordered, indent=1))
    (out / "table.md").write_text(markdown(ordered) + "\n")
    plot(ordered, out / "size_time.png")


if __name__ == "__main__":
    main()
