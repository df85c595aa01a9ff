"""The summary of a sweep: summary.csv, summary.md and plots, one row per job, from the job directories alone.

Written by `SummaryCallback` when a `-m` sweep ends (zoo/conf/config.yaml `hydra.callbacks`), and rebuilt at any time,
e.g. after a cluster sweep or from a copied folder, with

    python -m zoo.summary multirun/<date>

A job is a folder with Hydra's `.hydra/overrides.yaml`; its figures come from its report.json. A job without a
report.json (killed, or crashed before writing one) is listed with status `no report`, one stopped by Ctrl-C with
`interrupted`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from zoo.errors import InputError
from zoo.eval.scoreboard import EVAL_KEYS, eval_columns, write_scoreboard
from zoo.files import write_atomic
from zoo.quiet import guarded

COLUMNS = [
    "job",
    "status",
    "model",
    "quant",
    "kv_cache_max",
    "prefill_lens",
    "size_mb",
    "golden_max_abs_diff",
    "check_top1",
    "check_kl",
    "prefill_tok_s",
    "decode_tok_s",
    "decode_loop_tok_s",
    "ttft_ms",
    "runtime_peak_rss_mib",
    "convert_peak_rss_gib",
    "convert_s",
    "bits_per_weight",
    *EVAL_KEYS,
    "error",
]
PLOTS = {"decode_tok_s": "decode tok/s (runtime, invoke only)", "size_mb": "file size (MB)"}


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml"))


def job_row(sweep_dir: Path, job: Path) -> dict:
    """One job's row: what it ran (from Hydra's record of the job) and what it measured (its report.json)."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    composed = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {}
    report_path = job / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"status": "no report"}
    exp, chk, bench = report.get("export", {}), report.get("check", {}), report.get("bench", {})
    golden = report.get("golden", {})
    prefill = bench.get("prefill_tok_s", {})
    return {
        "job": str(job.relative_to(sweep_dir)),
        "overrides": " ".join(overrides),
        "status": report.get("status", "no report"),
        "model": composed.get("model", {}).get("name"),
        "quant": composed.get("quant", {}).get("name"),
        "kv_cache_max": composed.get("export", {}).get("kv_cache_max"),
        "prefill_lens": " ".join(map(str, composed.get("export", {}).get("prefill_lens", []))),
        "size_mb": exp["size_bytes"] / 1e6 if "size_bytes" in exp else None,
        "golden_max_abs_diff": golden.get("max_abs_diff"),
        "check_top1": chk.get("top1"),
        "check_kl": chk.get("kl"),
        "prefill_tok_s": " ".join(f"{t}:{v:.0f}" for t, v in prefill.items()) or None,
        "decode_tok_s": bench.get("decode_tok_s"),
        "decode_loop_tok_s": bench.get("decode_loop_tok_s"),
        "ttft_ms": bench["ttft_s"] * 1e3 if "ttft_s" in bench else None,
        "runtime_peak_rss_mib": bench["runtime_peak_rss_bytes"] / 2**20 if "runtime_peak_rss_bytes" in bench else None,
        "convert_peak_rss_gib": exp["convert_peak_rss_bytes"] / 2**30 if "convert_peak_rss_bytes" in exp else None,
        "convert_s": exp.get("convert_seconds"),
        **eval_columns(report),
        "error": report.get("error", "").splitlines()[0][:300] if report.get("error") else None,
    }


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"
    return str(value)


def varying(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Overrides shared by every job, and each job's own: the table shows only what tells the jobs apart."""
    per_job = [r["overrides"].split() for r in rows]
    common = [o for o in per_job[0] if all(o in job for job in per_job)] if len(rows) > 1 else []
    return common, [[o for o in job if o not in common] for job in per_job]


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["overrides", *COLUMNS], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(rows: list[dict], sweep_dir: Path) -> str:
    head = [
        "overrides",
        "status",
        "size MB",
        "golden diff",
        "top-1",
        "KL",
        "eval PPL ratio",
        "eval KLD",
        "eval same top",
        "prefill tok/s",
        "decode tok/s",
        "decode tok/s (loop)",
        "TTFT ms",
        "runtime RSS MiB",
        "convert RSS GiB",
        "convert s",
    ]
    keys = [
        "overrides",
        "status",
        "size_mb",
        "golden_max_abs_diff",
        "check_top1",
        "check_kl",
        "eval_ppl_ratio",
        "eval_kld_mean",
        "eval_same_top",
        "prefill_tok_s",
        "decode_tok_s",
        "decode_loop_tok_s",
        "ttft_ms",
        "runtime_peak_rss_mib",
        "convert_peak_rss_gib",
        "convert_s",
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    common, own = varying(rows)
    statuses = ("ok", "failed", "interrupted", "no report")
    counts = {status: sum(r["status"] == status for r in rows) for status in statuses}
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n or status in ("ok", "failed"))
    lines = [
        f"# Sweep {sweep_dir.name}: {len(rows)} jobs, {tally}",
        "",
        f"Every job: `{' '.join(common) or '(no common overrides)'}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r, mine in zip(rows, own):
        cells = [" ".join(mine)] + [fmt(r[k]) for k in keys[1:]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if failed:
        lines += ["", "## Failed jobs", ""] + [
            f"- `{r['overrides'] or r['job']}`: {r['error'] or r['status']}" for r in failed
        ]
    lines += [
        "",
        (
            "Speeds are medians (zoo/runtime/speed.py): prefill and decode tok/s are invoke-only runs; the "
            "loop column is a full step of zoo's generate loop."
        ),
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], key: str, label: str, path: Path) -> bool:
    """`key` against kv_cache_max, one line per model/quant/prefill setting; False (no file) without data."""
    from matplotlib.figure import (
        Figure,  # the object API renders with Agg and touches no global backend
    )

    lines: dict[str, list[tuple[int, float]]] = {}
    models = {r["model"] for r in rows}
    for r in rows:
        if r[key] is None or r["kv_cache_max"] is None:
            continue
        name = f"{r['quant']} prefill=[{r['prefill_lens']}]"
        lines.setdefault(f"{r['model']} {name}" if len(models) > 1 else name, []).append((r["kv_cache_max"], r[key]))
    if not lines:
        return False
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({x for pts in lines.values() for x, _ in pts}))
    ax.get_xaxis().set_major_formatter("{x:.0f}")
    ax.set_xlabel("export.kv_cache_max")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())
    return True


def write_summary(sweep_dir: Path) -> dict[str, Path]:
    """summary.csv, summary.md and the plots with data, written into `sweep_dir`; returns what was written."""
    rows = sorted(
        (job_row(sweep_dir, job) for job in job_dirs(sweep_dir)),
        key=lambda r: (str(r["model"]), str(r["quant"]), r["prefill_lens"], r["kv_cache_max"] or 0, r["job"]),
    )
    if not rows:
        raise InputError(
            f"{sweep_dir}: no sweep jobs here (no */.hydra/overrides.yaml): give the folder of a `-m` sweep"
        )
    written = {"csv": sweep_dir / "summary.csv", "md": sweep_dir / "summary.md"}
    write_atomic(written["csv"], to_csv(rows))
    write_atomic(written["md"], to_markdown(rows, sweep_dir))
    for key, label in PLOTS.items():
        if plot(rows, key, label, sweep_dir / f"{key}.png"):
            written[key] = sweep_dir / f"{key}.png"
    written.update(write_scoreboard(rows, sweep_dir))
    return written


class SummaryCallback(Callback):
    """Hydra callback: the summary of the sweep directory when a multirun ends (also after failed jobs)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        written = write_summary(sweep_dir)
        print(written["md"].read_text())
        print("summary: " + ", ".join(str(p) for p in written.values()))


def main(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m zoo.summary <sweep dir>: rebuild its summary.csv, summary.md and plots")
        return
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        raise InputError(
            f"{' '.join(argv) or 'no folder given'}: give one sweep folder (e.g. multirun/2026-01-01_12-00-00)"
        )
    written = write_summary(Path(argv[0]))
    print(written["md"].read_text())
    print("summary: " + ", ".join(str(p) for p in written.values()))


if __name__ == "__main__":
    sys.exit(guarded("zoo.summary", lambda: main(sys.argv[1:]), sys.argv[1:]))
