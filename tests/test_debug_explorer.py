"""Model Explorer on the finder's overlays, in Debian's Chromium driven by Playwright (tests/web_browser.py): the
flatbuffer's graph and a torch.export program's graph each load with their node data, and the page `zoo.debug`
prints opens both side by side. A screenshot of each is saved in the test's temp folder. A missing browser fails the
test, it never skips."""

from __future__ import annotations

import copy
import json
import re
import socket

import pytest
import torch
from web_browser import browser

from zoo.debug.explorer import Overlays, start_server
from zoo.debug.run import run_finder
from zoo.kinds import kind_of
from zoo.pipeline import load_model, resolve_checkpoint

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # every case exports a model

SMALL = ["variant=small", "export.prefill_lens=[16]", "export.kv_cache_max=64", "debug.blame=0"]
LOAD_TIMEOUT_MS = 240_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_model_explorer_shows_both_graphs_with_their_overlays(tmp_path):
    port = free_port()
    cfg = compose_cfg(["model=smollm2_135m", *SMALL, f"debug.port={port}"])
    model = load_model(cfg, kind_of(cfg), resolve_checkpoint(cfg).checkpoint).model
    broken = copy.deepcopy(model)  # a fault in layer 1, so the overlay has colours to show
    with torch.no_grad():
        broken.model.layers[1].mlp.gate_up_proj.weight[5, 7] += 3.0
    kind = kind_of(cfg)
    path = tmp_path / "model.tflite"
    kind.export(broken, path, cfg)
    section = run_finder(cfg, kind, model, kind.golden_inputs(cfg, None), path, tmp_path)
    names = [m.rsplit("/", 1)[-1] for m in section["explorer"]["models"]]
    assert names == ["model.tflite", "prefill_16.pt2", "decode.pt2"]
    explorer = tmp_path / "explorer"
    views = [
        (explorer / "model.overlay.json", path),
        (explorer / "prefill_16.overlay.json", explorer / "prefill_16.pt2"),
    ]
    server = start_server(port)
    try:
        with browser() as context:
            for node_data, graph in views:
                page = context.new_page()
                page.goto(Overlays(models=[graph], node_data=[(node_data, graph)]).url(port))
                page.get_by_text("op node count").wait_for(timeout=LOAD_TIMEOUT_MS)
                page.get_by_text(node_data.name).first.wait_for(timeout=LOAD_TIMEOUT_MS)
                graphs = json.loads(node_data.read_text()).values()  # a flatbuffer has one per signature
                maxima = [max(r["value"] for r in g["results"].values()) for g in graphs]
                page.get_by_text("Aggregated stats").wait_for(timeout=LOAD_TIMEOUT_MS)
                shown = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", page.inner_text("body"))]
                assert any(abs(x - m) <= 1e-9 * m for x in shown for m in maxima), maxima  # the shown graph's max
                shot = tmp_path / f"model_explorer_{graph.stem}.png"
                page.screenshot(path=str(shot))
                assert shot.stat().st_size > 10_000
                page.close()
            page = context.new_page()  # the split view of the printed URL: the fault's signature in both graphs
            page.goto(section["explorer"]["url"])
            assert section["first_failing"]["signature"] == "prefill_16"
            stats = page.get_by_text("op node count")
            stats.nth(1).wait_for(timeout=LOAD_TIMEOUT_MS)  # one graph info panel per pane
            body = page.inner_text("body")
            assert "prefill_16" in body and "graph" in body, body[:2000]
            shot = tmp_path / "model_explorer_split.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait()
