"""A sweep's quality scoreboard: `scoreboard.md` (one row per recipe, llama.cpp's figures) and `kld_vs_size.png`
(file size and bits per weight against mean KLD, log scale), written next to summary.csv when jobs ran the eval."""

from __future__ import annotations

import io
from pathlib import Path

from zoo.files import write_atomic

EVAL_KEYS = {  # summary column -> report eval figure
    "eval_ppl": "ppl",
    "eval_ppl_se": "ppl_se",
    "eval_ppl_ref": "ppl_ref",
    "eval_dppl": "dppl",
    "eval_ppl_ratio": "ppl_ratio",
    "eval_kld_mean": "kld_mean",
    "eval_kld_median": "kld_median",
    "eval_kld_p99": "kld_p99",
    "eval_kld_max": "kld_max",
    "eval_same_top": "same_top",
    "eval_rms_dp": "rms_dp",
    "eval_tokens": "tokens",
    "eval_windows": "windows",
    "eval_cosine": "cosine_mean",
    "eval_s": "seconds",
}


def eval_columns(report: dict) -> dict:
    """The summary's eval columns of one job's report (None where it has no eval), and its bits per weight."""
    section, size = report.get("eval", {}), report.get("export", {}).get("size_bytes")
    row = {column: section.get(key) for column, key in EVAL_KEYS.items()}
    row["bits_per_weight"] = 8 * size / report["num_params"] if size and report.get("num_params") else None
    return row


def scoreboard_md(rows: list[dict]) -> str:
    rows = sorted((r for r in rows if r["eval_kld_mean"] is not None), key=lambda r: r["size_mb"] or 0)
    head = [
        "model",
        "quant",
        "file MB",
        "bits/weight",
        "PPL ± SE",
        "ΔPPL",
        "PPL ratio",
        "KLD mean",
        "KLD median",
        "KLD p99",
        "KLD max",
        "same top",
        "RMS Δp",
        "tokens / windows",
        "eval s",
    ]
    lines = [
        "# Quality scoreboard",
        "",
        "Flatbuffer vs transformers fp32 eager on the same tokens (llama.cpp's "
        "`llama-perplexity --kl-divergence` method, zoo/eval/); smaller files first.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    str(r["model"]),
                    str(r["quant"]),
                    f"{r['size_mb']:.1f}",
                    f"{r['bits_per_weight']:.2f}",
                    f"{r['eval_ppl']:.3f} ± {r['eval_ppl_se']:.3f}",
                    f"{r['eval_dppl']:+.3f}",
                    f"{r['eval_ppl_ratio']:.4f}",
                    f"{r['eval_kld_mean']:.4f}",
                    f"{r['eval_kld_median']:.4f}",
                    f"{r['eval_kld_p99']:.3f}",
                    f"{r['eval_kld_max']:.2f}",
                    f"{r['eval_same_top']:.1%}",
                    f"{r['eval_rms_dp']:.2%}",
                    f"{r['eval_tokens']} / {r['eval_windows']}",
                    f"{r['eval_s']:.0f}",
                ]
            )
            + " |"
        )
    refs = {(r["model"], f"{r['eval_ppl_ref']:.3f}") for r in rows}
    lines += ["", "Transformers fp32 PPL: " + ", ".join(f"{m} {p}" for m, p in sorted(refs)), ""]
    return "\n".join(lines)


def plot_kld(rows: list[dict], path: Path) -> None:
    """Mean KLD (log) against file size and bits per weight, one point per recipe."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r["size_mb"], r["eval_kld_mean"])
        ax.annotate(
            f"{r['quant']} ({r['bits_per_weight']:.1f} b/w)",
            (r["size_mb"], r["eval_kld_mean"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("mean KL divergence vs transformers fp32 (nats)")
    ax.grid(alpha=0.3, which="both")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


def write_scoreboard(rows: list[dict], sweep_dir: Path) -> dict[str, Path]:
    """scoreboard.md and kld_vs_size.png from the rows whose jobs measured KLD (decoder kinds); {} when none."""
    scored = [r for r in rows if r["eval_kld_mean"] is not None and r["size_mb"]]
    if not scored:
        return {}
    written = {"scoreboard": sweep_dir / "scoreboard.md", "kld_plot": sweep_dir / "kld_vs_size.png"}
    write_atomic(written["scoreboard"], scoreboard_md(scored))
    plot_kld(scored, written["kld_plot"])
    return written
