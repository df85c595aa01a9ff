"""The house's shape: the runtime stands without the build side."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

RUNTIME = [
    "zoo.runtime",
    "zoo.runtime.model",
    "zoo.runtime.generate",
    "zoo.runtime.sampling",
    "zoo.runtime.speed",
    "zoo.runtime.tokenizer",
]
BUILD_SIDE = [
    "torch",
    "transformers",
    "tensorflow",
    "jax",
    "hydra",
    "omegaconf",
    "zoo.config",
    "zoo.pipeline",
    "zoo.checkpoint",
    "zoo.export",
]


def test_runtime_imports_nothing_of_the_build_side():
    """`zoo.runtime` runs a flatbuffer with LiteRT alone: importing it loads no torch, transformers, TensorFlow,
    Hydra nor any build module (its config types come from zoo.schema), so it works installed without them."""
    probe = (
        f"import sys\nfor m in {RUNTIME!r}: __import__(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BUILD_SIDE!r} or m in {BUILD_SIDE!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
