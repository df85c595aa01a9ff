"""Export of an encoder kind's signatures (signatures.PROGRAMS) through the decoder's path: torch.export, our
lowering over one shared set of tf.Variables, the builtins-only converter and the quant recipe."""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from zoo.config import QuantConfig
from zoo.export.convert import converter_for, to_variables
from zoo.export.quantize import quantize
from zoo.export.signatures import Program, export_program, tf_signature
from zoo.report import write_atomic


def export_programs(programs: Sequence[Program], path: Path, recipe: QuantConfig) -> list[str]:
    """Writes the multi-signature flatbuffer atomically; returns its signature names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exported = {p.name: export_program(p) for p in programs}
    state = to_variables(programs[0].step)
    module = tf.Module()
    module.weights = list(state.values())
    functions = {p.name: tf_signature(exported[p.name], state, p.inputs, p.outputs) for p in programs}
    names = [p.name for p in programs]
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".saved_model.") as saved_model:
        tf.saved_model.save(module, saved_model, signatures=functions)
        data = converter_for(saved_model, names, recipe).convert()
    write_atomic(path, quantize(data, recipe))
    return names
