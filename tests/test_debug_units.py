"""The finder's parts on hand-made values (fast tier): its metrics, the pairing of modules with flatbuffer tensors
by name scope, and the Model Explorer page's split view."""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from torch import nn

from zoo.debug.blame import suspects
from zoo.debug.explorer import Overlays
from zoo.debug.finder import Finding, Node, metrics
from zoo.debug.match import match
from zoo.debug.tflite import OpOutput


def test_metrics_by_hand():
    m = metrics(np.array([3.0, 4.0]), np.array([3.0, 5.0]))
    assert m["max_abs_diff"] == 1.0
    assert m["peak"] == pytest.approx(1 / 4)  # max |diff| over max |value|
    assert m["rel_rms"] == pytest.approx(1 / 5)  # |diff| / |ref|
    assert m["cosine"] == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    exact = metrics(np.zeros(3), np.zeros(3))
    assert (exact["rel_rms"], exact["cosine"], exact["peak"]) == (0.0, 1.0, 0.0)


def out(op: int, name: str, shape=(1, 4, 8)) -> OpOutput:
    return OpOutput(op=op, tensor=100 + op, name=name, shape=shape, opcode="X")


def test_match_takes_the_last_op_wholly_inside_a_module():
    modules = {
        "layers.0.self_attn.o_proj": (1, 4, 8),
        "layers.0.self_attn": (1, 4, 8),
        "layers.0.mlp.down_proj": (1, 4, 8),
        "layers.0": (1, 4, 8),
    }
    outputs = [
        out(0, "layers.0.self_attn.o_proj/MatMul"),
        out(1, "layers.0/Add"),  # the first residual add
        out(2, "layers.0.mlp.gate_up_proj/MatMul", (1, 4, 16)),
        out(3, "layers.0.mlp.down_proj/MatMul;layers.0_1/Add"),  # fused with the second add (scope entered again)
    ]
    found = match(modules, outputs)
    assert found["layers.0.self_attn.o_proj"] == found["layers.0.self_attn"] == [outputs[0]]
    assert found["layers.0"] == [outputs[3]]  # both parts lie inside the layer
    assert "layers.0.mlp.down_proj" not in found  # its last op is fused with the layer's add: no node, not a wrong one


def test_match_refuses_a_wrong_shape_and_offers_the_rotated_back_twin():
    modules = {"embed": (1, 4, 8), "norm": (1, 4, 8)}
    outputs = [
        out(0, "embed/GatherV2"),
        out(1, "embed/GatherV2_prerotate_reshaped", (4, 8)),
        out(2, "embed/GatherV2_postrotate_reshaped"),
        out(3, "norm/Mul", (1, 4, 2)),
    ]
    found = match(modules, outputs)
    assert found["embed"] == [outputs[0], outputs[2]]
    assert "norm" not in found  # its last op has another shape: no node rather than a wrong one


def test_the_page_opens_the_two_graphs_side_by_side(tmp_path: Path):
    flat, pt2 = tmp_path / "m.tflite", tmp_path / "decode.pt2"
    overlays = Overlays(
        models=[flat, pt2], node_data=[(tmp_path / "m.overlay.json", flat)], panes=[(flat, "decode"), (pt2, "graph")]
    )
    data = json.loads(parse_qs(urlparse(overlays.url(8123)).query)["data"][0])
    assert urlparse(overlays.url(8123)).netloc == "127.0.0.1:8123"
    assert [m["url"] for m in data["models"]] == [str(flat.resolve()), str(pt2.resolve())]
    assert data["nodeDataTargets"] == ["m.tflite"]
    panes = data["uiState"]["paneStates"]
    assert [(p["selectedCollectionLabel"], p["selectedGraphId"], p["widthFraction"]) for p in panes] == [
        ("m.tflite", "decode", 0.5),
        ("decode.pt2", "graph", 0.5),
    ]


def node(name: str, max_abs: float, added: float, past: bool = False) -> Node:
    return Node("prefill_8", name, name, 0, max_abs, 0.1, 0.1, 0.99, None, added, past)


def test_suspects_first_past_bounds_then_largest_absolute_error_then_added_error():
    """The ranking that finds SmolLM2's layer-11 down_proj: its relative error is small, its absolute one is not."""
    model = nn.ModuleDict({f"l{i}": nn.Linear(2, 2) for i in range(4)} | {"norm": nn.LayerNorm(2)})
    nodes = [
        node("l0", 1.0, 0.05),
        node("norm", 900.0, 0.30),  # not a weight op: never a suspect
        node("l1", 2.0, 0.01, past=True),
        node("l2", 2e3, -0.01),  # creates a massive activation: small relative error, large absolute one
        node("l3", 3.0, 0.20),
    ]
    finding = Finding(nodes, nodes[2], nodes[1], nodes[1])
    assert suspects(finding, model, 4) == ["l1", "l2", "l3", "l0"]
    assert suspects(finding, model, 2) == ["l1", "l2"]
