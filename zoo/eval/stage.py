"""The eval stage: measure a flatbuffer on real text against transformers fp32 (per model kind), gate it by the
recipe's bounds (`quant.eval`), and say it in one line."""

from __future__ import annotations

import time
from pathlib import Path

from zoo.checkpoint import Checkpoint
from zoo.eval.text import load_text
from zoo.kinds.base import ModelKind
from zoo.resources import timed
from zoo.results import Evaluated
from zoo.schema import EvalBounds, ZooConfig


def measure(cfg: ZooConfig, kind: ModelKind, path: Path, checkpoint: Checkpoint, tokenizer) -> dict:
    """The eval section of the report: the figures of the entry's kind (zoo/kinds/), what was read and how it was
    cut."""
    from zoo.golden import reference_model

    text = load_text(cfg.eval)
    start = time.perf_counter()
    hf = reference_model(cfg.model.reference, checkpoint)
    section = {
        "kind": kind.name,
        "text": cfg.eval.text,
        "bytes": list(cfg.eval.span()),
        "file": str(path),
        **kind.eval_figures(cfg, path, hf, text, tokenizer),
    }
    section["measure_seconds"] = time.perf_counter() - start
    return section


BOUNDS = {  # bound field -> (figure, is the figure allowed above the bound, name in messages)
    "max_kld": ("kld_mean", False, "mean KLD"),
    "max_kld_p99": ("kld_p99", False, "99th-percentile KLD"),
    "max_dppl_ratio": ("ppl_ratio", False, "PPL ratio"),
    "min_same_top": ("same_top", True, "same top"),
    "min_cosine": ("cosine_mean", True, "mean embedding cosine"),
}


def eval_failures(section: dict, bounds: EvalBounds) -> list[str]:
    """One line per bound the figures miss, with the margin; a bound on a figure the kind has not measured is
    not applicable."""
    out = []
    for key, (figure, lower, name) in BOUNDS.items():
        bound = getattr(bounds, key)
        if bound is None or figure not in section:
            continue
        value = section[figure]
        if (value < bound) if lower else (value > bound):
            out.append(
                f"{name} {value:.6g} {'below' if lower else 'above'} bound {bound:g} by {abs(value - bound):.3g} "
                f"({abs(value - bound) / abs(bound):.1%})"
            )
    return out


def run_eval(cfg: ZooConfig, kind: ModelKind, path: Path, checkpoint: Checkpoint, tokenizer) -> Evaluated:
    """Measure in a timed stage (time, peak RSS) and judge by the recipe's bounds: past one is the result's
    `failure`. Input the eval cannot take raises EvalError and leaves no result."""
    with timed("eval") as clock:
        figures = measure(cfg, kind, path, checkpoint, tokenizer)
    failures = eval_failures(figures, cfg.quant.eval)
    bounds = {k: v for k, v in vars(cfg.quant.eval).items() if v is not None}
    failure = f"eval of {path.name} ({cfg.quant.name}) failed: " + "; ".join(failures)
    return Evaluated(figures, bounds, failures, failure if failures else None, clock.timing)


def eval_line(section: dict) -> str:
    """The eval in one line, llama.cpp's figures first."""
    verdict = "PASS" if section.get("passed", True) else "FAIL"
    took = f"{section['seconds']:.0f} s, peak RSS {section['peak_rss_bytes'] / 2**30:.2f} GiB"
    if "cosine_mean" in section:  # figures of an embedding, not of a language model's text
        return (
            f"eval {verdict} over {section['sentences']} sentences: embedding cosine vs transformers mean "
            f"{section['cosine_mean']:.5f} (std {section['cosine_std']:.2e}, min {section['cosine_min']:.5f}); "
            f"{took}"
        )
    s = section
    return (
        f"eval {verdict}: PPL {s['ppl']:.3f} ± {s['ppl_se']:.3f} (transformers {s['ppl_ref']:.3f} ± "
        f"{s['ppl_ref_se']:.3f}; ΔPPL {s['dppl']:+.3f} ± {s['dppl_se']:.3f}, ratio {s['ppl_ratio']:.4f}), KLD mean "
        f"{s['kld_mean']:.4g} median {s['kld_median']:.3g} p99 {s['kld_p99']:.3g} max {s['kld_max']:.3g}, same top "
        f"{s['same_top']:.1%}, RMS Δp {s['rms_dp']:.2%}; {s['tokens']} tokens in {s['windows']} windows of "
        f"{s['ctx']}; {took}"
    )
