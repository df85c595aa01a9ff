"""The finder: per node (a module's output, then the signature's outputs) max |diff|, relative RMS error and cosine
of the flatbuffer against PyTorch, the growth over the module before it, and the first node past the recipe's bounds.

Growth tells a layer that amplifies an error from one that only passes it on: `added` (relative RMS error minus
the previous module's) ranks the suspects, `growth` (their ratio) is shown; outputs are measured against the last
module. `peak` (max |diff| / max |value|) catches what relative RMS averages away: an error on the few massive
channels of the residual stream (SmolLM2's ~3000). The recipe's bounds are on the final output; a node's max |diff|
is held to the same bound relative to its own scale (max |diff| / max |value| against the bound / max |output|),
its cosine to the same minimum.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zoo.debug.match import match
from zoo.debug.taps import flat_args, module_outputs
from zoo.debug.tflite import op_outputs, run_signature
from zoo.errors import InputError
from zoo.files import write_atomic
from zoo.schema import QuantCheck


@dataclass
class Node:
    signature: str
    node: str  # module path in the model (the step's own prefix dropped), or `output:<name>`
    tensor: str  # the flatbuffer tensor compared
    op: int  # its op's index in the signature's subgraph (-1: a signature output)
    max_abs_diff: float
    peak: float  # max |diff| over max |value|: an error on a few massive channels, which relative RMS averages away
    rel_rms: float
    cosine: float
    growth: float | None  # rel_rms over the previous node's (None: the first node, or a previous one exact)
    added: float  # rel_rms minus the previous node's
    past_bounds: bool = False

    @property
    def layer(self) -> str:
        """The layer holding the node: its path up to the first numbered part (`model.layers.11`), else itself."""
        found = re.match(r"^(.*?\.\d+)(?:\.|$)", self.node)
        return found.group(1) if found else self.node


def metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    ref, got = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = got - ref
    norm_ref, norm_got = np.linalg.norm(ref), np.linalg.norm(got)
    rel = float(np.linalg.norm(diff) / norm_ref) if norm_ref else float(np.linalg.norm(diff) > 0)
    cosine = float(ref @ got / (norm_ref * norm_got)) if norm_ref and norm_got else float(norm_ref == norm_got)
    max_abs, scale = float(np.abs(diff).max(initial=0.0)), float(np.abs(ref).max(initial=0.0))
    peak = max_abs / scale if scale else float(max_abs > 0)
    return {"max_abs_diff": max_abs, "peak": peak, "rel_rms": rel, "cosine": cosine}


def _past(m: dict[str, float], scale: float, out_scale: float, bounds: QuantCheck) -> bool:
    if bounds.min_cosine is not None and m["cosine"] < bounds.min_cosine:
        return True
    if bounds.max_abs_diff is not None and scale > 0 and out_scale > 0:
        return m["max_abs_diff"] / scale > bounds.max_abs_diff / out_scale
    return False


def compare_signature(path: Path, program, graph, bounds: QuantCheck, threads: int) -> list[Node]:
    """The nodes of one signature call (a Program whose args are the call's real inputs), in execution order."""
    step = program.step
    refs, ref_outputs = module_outputs(step, program.args)
    children = [name for name, _ in step.named_children()]
    prefix = children[0] + "." if len(children) == 1 else ""
    matched = match({p: r.shape for p, r in refs.items()}, graph.outputs)
    feed = dict(zip(program.inputs, flat_args(program.args), strict=True))
    tensors = [o.tensor for outs in matched.values() for o in outs]
    values, outputs = run_signature(path, program.name, graph.subgraph, feed, tensors, threads)
    out_scale = float(np.abs(ref_outputs[0]).max())
    pairs = []
    for p, ref in refs.items():
        if p in matched:  # of a tensor and its rotated-back twin, the one in PyTorch's basis
            out = min(matched[p], key=lambda o: metrics(ref, values[o.tensor])["rel_rms"])
            pairs.append((p.removeprefix(prefix), out.name, out.op, ref, values[out.tensor]))
    pairs += [(f"output:{n}", n, -1, r, outputs[n]) for n, r in zip(program.outputs, ref_outputs, strict=True)]
    nodes, previous = [], None
    for node, tensor, op, ref, got in pairs:
        m = metrics(ref, got.reshape(ref.shape) if got.size == ref.size else got)
        prev = previous if previous is not None else 0.0
        growth = m["rel_rms"] / prev if prev > 0 else None
        past = _past(m, float(np.abs(ref).max()), out_scale, bounds)
        nodes.append(
            Node(program.name, node, tensor, op, **m, growth=growth, added=m["rel_rms"] - prev, past_bounds=past)
        )
        if not node.startswith("output:"):  # every output is measured against the last module, not each other
            previous = m["rel_rms"]
    return nodes


@dataclass
class Finding:
    nodes: list[Node]
    first_failing: Node | None
    worst: Node | None  # adding the most relative RMS error
    worst_peak: Node | None  # the largest peak error

    def section(self) -> dict:
        """report.json's `debug`: the first node past the bounds and the node (and layer) adding most error."""

        def brief(n: Node | None) -> dict | None:
            if n is None:
                return None
            keys = ("signature", "node", "tensor", "max_abs_diff", "peak", "rel_rms", "cosine", "growth")
            return {**{k: getattr(n, k) for k in keys}, "layer": n.layer}

        return {
            "nodes": len(self.nodes),
            "first_failing": brief(self.first_failing),
            "worst": brief(self.worst),
            "worst_peak": brief(self.worst_peak),
        }


def find(path: Path, programs: Sequence, bounds: QuantCheck, threads: int) -> Finding:
    """Every signature call of `programs` (each kind's zoo/kinds/<kind>/programs.py) through PyTorch and the
    flatbuffer at `path`."""
    graphs = op_outputs(path)
    nodes = []
    for program in programs:
        if program.name not in graphs:
            raise InputError(f"{path.name} has no signature {program.name!r} (it has {', '.join(graphs)})")
        nodes += compare_signature(path, program, graphs[program.name], bounds, threads)
    first = next((n for n in nodes if n.past_bounds), None)
    inner = [n for n in nodes if not n.node.startswith("output:")] or nodes
    worst = max(inner, key=lambda n: n.added, default=None)
    return Finding(nodes, first, worst, max(inner, key=lambda n: n.peak, default=None))


def write_json(finding: Finding, path: Path, extra: dict | None = None) -> None:
    """debug.json: every node's figures, the verdict and whatever else the run adds (blame), written atomically."""
    data = {**finding.section(), **(extra or {}), "nodes": [asdict(n) for n in finding.nodes]}
    write_atomic(path, json.dumps(data, indent=1, default=float) + "\n")


def table(finding: Finding, top: int) -> str:
    """The worst `top` modules by added error and each signature's first output, in execution order, and the first
    node past the bounds."""
    inner = [n for n in finding.nodes if not n.node.startswith("output:")]
    ranked = sorted(inner, key=lambda n: n.added, reverse=True)[:top]
    finals: dict[str, Node] = {}  # each signature's first output: logits, embedding, encoder states
    for n in finding.nodes:
        if n.node.startswith("output:"):
            finals.setdefault(n.signature, n)
    picked = {id(n) for n in ranked} | {id(finding.first_failing), id(finding.worst_peak)}
    picked |= {id(n) for n in finals.values()}
    shown = [n for n in finding.nodes if id(n) in picked]
    width = max((len(n.node) for n in shown), default=4)
    lines = [
        f"{'signature':<12} {'node':<{width}} {'max|diff|':>10} {'peak':>8} {'rel RMS':>9} {'cosine':>9} {'growth':>8}"
    ]
    for n in shown:
        mark = "  <- first past bounds" if n is finding.first_failing else ""
        growth = f"{n.growth:8.2f}" if n.growth is not None else f"{'new':>8}"
        figures = f"{n.max_abs_diff:10.3g} {n.peak:8.3f} {n.rel_rms:9.2e} {n.cosine:9.5f} {growth}"
        lines.append(f"{n.signature:<12} {n.node:<{width}} {figures}{mark}")
    first = finding.first_failing
    verdict = f"first node past the bounds: {first.signature} {first.node}" if first else "no node past the bounds"
    worst = finding.worst
    if worst:
        verdict += f"; most added error: {worst.signature} {worst.node} (layer {worst.layer})"
    if finding.worst_peak:
        verdict += f"; largest peak error: {finding.worst_peak.signature} {finding.worst_peak.node}"
    lines.append(verdict)
    return "\n".join(lines)
