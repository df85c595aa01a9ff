"""Model Explorer (PyPI ai-edge-model-explorer) overlays of the finder's figures, and its server.

Node data via its public `model_explorer.node_data_builder`: for the flatbuffer, the graph id is the signature key
and the node key the op's index in its subgraph; for each signature's `torch.export` program (saved as
`<signature>.pt2`, which Model Explorer's PyTorch adapter loads), the graph id is `graph` and the node key the fx
node that ends the module. The value is the node's relative RMS error, on one colour scale for both graphs, so the
same divergence shows in the same colour side by side: the page opens split, the flatbuffer's graph of the signature
where the finder points (first node past the bounds, else most added error) on the left, its PyTorch program on the
right.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import torch

from zoo.debug.finder import Finding, Node
from zoo.errors import InputError
from zoo.files import write_atomic

HOST = "127.0.0.1"


@dataclass
class Overlays:
    """Model files and node-data files, each node-data file for the model named next to it, and the graphs the page
    opens side by side."""

    models: list[Path] = field(default_factory=list)
    node_data: list[tuple[Path, Path]] = field(default_factory=list)  # (node data, its model)
    panes: list[tuple[Path, str]] = field(default_factory=list)  # (model, graph id): left and right

    def url(self, port: int) -> str:
        """The page with every model and its overlay (Model Explorer's `data` URL parameter); with two panes, its
        `uiState` opens them split (the model's file name is its collection label)."""
        data = {
            "models": [{"url": str(m.resolve())} for m in self.models],
            "nodeData": [str(d.resolve()) for d, _ in self.node_data],
            "nodeDataTargets": [m.name for _, m in self.node_data],
        }
        if self.panes:
            width = 1 / len(self.panes)
            data["uiState"] = {
                "paneStates": [
                    {
                        "deepestExpandedGroupNodeIds": [],
                        "selectedNodeId": "",
                        "selectedGraphId": graph,
                        "selectedCollectionLabel": model.name,
                        "widthFraction": width,
                        "selected": i == 0,
                    }
                    for i, (model, graph) in enumerate(self.panes)
                ]
            }
        return f"http://{HOST}:{port}/?data={quote(json.dumps(data))}"


def _gradient() -> list:
    from model_explorer.node_data_builder import GradientItem

    return [
        GradientItem(stop=0, bgColor="#2e7d32"),
        GradientItem(stop=0.5, bgColor="#f9a825"),
        GradientItem(stop=1, bgColor="#c62828"),
    ]


def _graph_data(results: dict[str, float]):
    from model_explorer.node_data_builder import GraphNodeData, NodeDataResult

    return GraphNodeData(results={k: NodeDataResult(value=v) for k, v in results.items()}, gradient=_gradient())


def _write(path: Path, graphs: dict[str, dict[str, float]]) -> Path:
    from model_explorer.node_data_builder import ModelNodeData

    data = ModelNodeData(graphsData={g: _graph_data(r) for g, r in graphs.items()})
    write_atomic(path, data.to_json_string(indent=1) + "\n")
    return path


def fx_node_of(program: torch.export.ExportedProgram, module: str) -> str | None:
    """The fx node that ends `module` (its path in the exported step): the last call whose innermost module is it or
    one of its descendants."""
    last = None
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            path = next(reversed(stack.values()))[0]
            if path == module or path.startswith(module + "."):
                last = node.name
    return last


@contextlib.contextmanager
def static_cache_reads(step: torch.nn.Module) -> Iterator[None]:
    """Models that read only the filled cache slots (`read_multiple`, a run-time size) read all of them meanwhile:
    Model Explorer's PyTorch adapter takes no symbolic sizes. Same modules and ops, static shapes."""
    models = [m for m in step.modules() if getattr(m, "read_multiple", 0)]
    saved = [m.read_multiple for m in models]
    for m in models:
        m.read_multiple = 0
    try:
        yield
    finally:
        for m, value in zip(models, saved, strict=True):
            m.read_multiple = value


def write_overlays(finding: Finding, programs: Sequence, path: Path, out: Path) -> Overlays:
    """The flatbuffer's overlay, and per signature its torch.export program (.pt2) and that program's overlay; the
    panes show the signature the finder points at in both."""
    overlays = Overlays(models=[path])
    focus = finding.first_failing or finding.worst or finding.nodes[0]
    by_signature: dict[str, list[Node]] = {}
    for node in finding.nodes:
        by_signature.setdefault(node.signature, []).append(node)
    flat = {s: {str(n.op): n.rel_rms for n in nodes if n.op >= 0} for s, nodes in by_signature.items()}
    overlays.node_data.append((_write(out / f"{path.stem}.overlay.json", flat), path))
    for program in programs:
        children = [name for name, _ in program.step.named_children()]
        prefix = children[0] + "." if len(children) == 1 else ""
        with torch.no_grad(), static_cache_reads(program.step):
            exported = torch.export.export(program.step, tuple(program.args), strict=False)
        pt2 = out / f"{program.name}.pt2"
        torch.export.save(exported, pt2)
        results = {}
        for node in by_signature.get(program.name, []):
            key = None if node.node.startswith("output:") else fx_node_of(exported, prefix + node.node)
            if key is not None:
                results[key] = node.rel_rms
        overlays.models.append(pt2)
        overlays.node_data.append((_write(out / f"{program.name}.overlay.json", {"graph": results}), pt2))
        if program.name == focus.signature:
            overlays.panes = [(path, program.name), (pt2, "graph")]
    return overlays


def server_command(port: int) -> list[str]:
    """The server's command line (zoo/debug/serve.py: Model Explorer's, with zoo's custom op registered)."""
    return [sys.executable, "-m", "zoo.debug.serve", "--port", str(port)]


def start_server(port: int, timeout_s: float = 120) -> subprocess.Popen:
    """Model Explorer's server, answering on `port` (or an InputError saying why not)."""
    proc = subprocess.Popen(server_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InputError(f"Model Explorer's server exited with status {proc.returncode} (port {port} in use?)")
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise InputError(f"Model Explorer's server did not answer on port {port} within {timeout_s:.0f} s")
