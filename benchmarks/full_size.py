"""Full-size entries end to end on this machine, as a benchmark (not a test): each `python -m zoo` job in its own
process, its report.json read back into one table and a size/time plot.

    python benchmarks/full_size.py [--jobs model=gemma_2b,quant=int8_dynamic ...] [--out docs/full_size]

Each job is `python -m zoo <overrides>` with its own run directory under --out; a job that fails is a row with its
error. The table (markdown, printed and written as table.md): entry, parameters, recipe, whether it streamed, file
size, the run's peak RSS (the largest stage peak) against the budget of file + 3 GiB, seconds per stage, the gate's
figures. The plot (size_time.png): gate and export seconds against parameters.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_JOBS = [
    "model=smollm2_135m,quant=int8_dynamic",
    "model=qwen2_5_0_5b,model.checkpoint=random,quant=int8_dynamic",
    "model=tinyllama,model.checkpoint=random,quant=int8_dynamic",
    "model=gemma_2b,quant=int8_dynamic",
    "model=phi3_5_mini,quant=int4_block32",
    "model=mistral_7b,quant=int4_block32",
]
STAGES = ("checkpoint", "load", "golden", "export", "check", "eval")


def run_job(overrides: list[str], run_dir: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", *overrides, f"hydra.run.dir={run_dir}"], capture_output=True, text=True
    )
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    report["exit"] = proc.returncode
    report["stderr_tail"] = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    return report


def row(job: str, report: dict) -> dict:
    timings = report.get("timings", {})
    peak = max((t["peak_rss_bytes"] for t in timings.values()), default=0) / 2**30
    size = report.get("export", {}).get("size_bytes", 0) / 1e9
    gate = report.get("golden", {})
    return {
        "job": job,
        "params_b": report.get("num_params", 0) / 1e9,
        "streamed": report.get("streamed"),
        "file_gb": size,
        "peak_gib": peak,
        "budget_gib": size * 1e9 / 2**30 + 3 if size else None,
        "seconds": {s: timings[s]["seconds"] for s in STAGES if s in timings},
        "wall": report.get("wall_seconds"),
        "gate": f"{gate.get('max_abs_diff', float('nan')):.1e} / {gate.get('greedy_tokens_equal', '-')}",
        "check": report.get("check", {}),
        "exit": report.get("exit"),
        "error": " ".join(report.get("stderr_tail", [])),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| job | params (B) | streamed | file (GB) | peak RSS (GiB) | budget (GiB) | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | wall s | gate max diff / greedy | result |",
        "|" + "---|" * (10 + len(STAGES)),
    ]
    for r in rows:
        budget = f"{r['budget_gib']:.1f}" if r["budget_gib"] else "-"
        secs = " | ".join(f"{r['seconds'][s]:.0f}" if s in r["seconds"] else "-" for s in STAGES)
        result = "ok" if r["exit"] == 0 else f"exit {r['exit']}: {r['error'][:120]}"
        lines.append(
            f"| {r['job']} | {r['params_b']:.2f} | {r['streamed']} | {r['file_gb']:.2f} | {r['peak_gib']:.2f} | "
            f"{budget} | {secs} | {r['wall']:.0f} | {r['gate']} | {result} |"
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
            ax.plot(*zip(*points), marker="o", label=stage)
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
    args = parser.parse_args()
    rows = []
    for i, job in enumerate(args.jobs):
        report = run_job(job.split(","), args.out / f"job{i}")
        rows.append(row(job, report))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "size_time.png")
    print(table)


if __name__ == "__main__":
    main()
