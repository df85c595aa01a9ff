"""Per-op blame: how much of the final output's error each suspect weight op accounts for.

The suspects are the weight ops (linear and embedding modules): the first past the bounds, the one writing the
largest absolute error, then those adding the most relative error. The second is the one relative figures miss: a
matrix that creates a massive activation (SmolLM2's layer-11 down_proj makes its ~25000 channel) errs by 2e3 while
its error relative to its own output stays small; what it writes joins the residual stream all later layers read.
For each, the model is exported again by the same recipe with only that op's weight kept float (`quant.keep_float`,
a regex on its scope) and the signature call whose first output is furthest off runs again: the share of that
output's relative RMS error that goes away is the op's (negative: keeping it float made the output worse; errors
of several ops can cancel). The op with the largest share is the culprit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from torch import nn

from zoo.debug.finder import Finding, metrics
from zoo.debug.taps import flat_args, module_outputs
from zoo.debug.tflite import op_outputs, run_signature
from zoo.files import scratch
from zoo.schema import QuantConfig, ZooConfig


def suspects(finding: Finding, model: nn.Module, n: int) -> list[str]:
    """The `n` weight-op module paths to blame: the first past the bounds, the one with the largest max |diff|, then
    those adding the most relative error (each once across signatures)."""
    weights = {path for path, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    ops = [x for x in finding.nodes if x.node in weights]
    first = next((x for x in ops if x.past_bounds), None)
    largest = max(ops, key=lambda x: x.max_abs_diff, default=None)
    ranked = [x.node for x in (first, largest) if x is not None]
    ranked += [x.node for x in sorted(ops, key=lambda x: x.added, reverse=True) if x.added > 0]
    return list(dict.fromkeys(ranked))[:n]


def blame(cfg: ZooConfig, model: nn.Module, programs: Sequence, path: Path, finding: Finding, kind) -> list[dict]:
    """One row per suspect: its output error with that op float, and the share of the quantized file's error it
    accounts for."""
    names = suspects(finding, model, cfg.debug.blame)
    if not names or (cfg.quant.mode.value == "none" and not _any_component(cfg.quant)):
        return []
    last = max(programs, key=lambda p: _output_error(finding, p))  # where the output is furthest off
    _, ref_outputs = module_outputs(last.step, last.args)
    feed = dict(zip(last.inputs, flat_args(last.args), strict=True))

    def output_error(file: Path) -> float:
        graph = op_outputs(file)[last.name]
        _, outputs = run_signature(file, last.name, graph.subgraph, feed, [], cfg.threads)
        return metrics(ref_outputs[0], outputs[last.outputs[0]].reshape(ref_outputs[0].shape))["rel_rms"]

    rows = []
    base = output_error(path)
    with scratch(path) as tmp:
        variant = tmp / "variant.tflite"
        for name in names:
            scope = r"(?:^|\.)" + re.escape(name) + r"(?:_\d+)?(?:/|$)"  # its ops' scope, its module path
            recipe = replace(cfg.quant, keep_float=[*cfg.quant.keep_float, scope])
            kind.export(model, variant, replace(cfg, quant=recipe))
            error = output_error(variant)
            share = (base - error) / base if base > 0 else 0.0
            rows.append(
                {"op": name, "signature": last.name, "error_with_op_float": error, "error": base, "share": share}
            )
    return sorted(rows, key=lambda r: r["share"], reverse=True)  # the culprit first


def _output_error(finding: Finding, program) -> float:
    return next((n.rel_rms for n in finding.nodes if n.signature == program.name and n.node.startswith("output:")), 0)


def _any_component(recipe: QuantConfig) -> bool:
    return any(v is not None and v.value != "none" for v in vars(recipe.components).values())


def blame_table(rows: list[dict]) -> str:
    if not rows:
        return "blame: no quantized weight op among the suspects"
    width = max(len(r["op"]) for r in rows)
    lines = [
        f"blame ({rows[0]['signature']} output, rel RMS error {rows[0]['error']:.3e}): op kept float -> error, share"
    ]
    lines += [f"  {r['op']:<{width}} {r['error_with_op_float']:.3e} {r['share']:7.1%}" for r in rows]
    top = rows[0]
    if top["share"] > 0:
        lines.append(f"culprit: {top['op']} (kept float, {top['share']:.0%} of the output's error goes away)")
    return "\n".join(lines)
