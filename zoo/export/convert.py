"""A kind's programs -> multi-signature .tflite: our lowering of each torch.export to TF, the TFLite converter.

The converter converts the graph only: weights are signature inputs until zoo/export/bake.py makes them constants,
one buffer each shared by every signature, so N prefill lengths cost no extra weight bytes. Only TFLite builtin
ops are allowed. The quant recipe is applied once, by ai-edge-quantizer on the baked model (zoo/export/quantize.py).

The model may hold its parameters on the meta device, its weights coming from a WeightSource (zoo/export/weights.py)
read one weight at a time as the quantizer or the writer needs it: memory is the output plus one float weight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from torch import nn
from torch.export import ExportedProgram

from zoo.export.bake import bake, write
from zoo.export.private import SavedModelConverter, keep_mul_and_fc_apart, schema
from zoo.export.quantize import quantize
from zoo.export.signatures import (
    tf_signature,
)
from zoo.export.weights import ModuleWeights, WeightSource, state_arrays, state_tensors
from zoo.files import scratch
from zoo.resources import release_memory
from zoo.schema import QuantConfig, QuantMode

__all__ = ["export_signatures", "op_counts", "state_arrays"]


def converter_for(saved_model: str, names: Sequence[str]) -> tf.lite.TFLiteConverter:
    """Builtins-only converter of the named signatures."""
    converter = SavedModelConverter(saved_model, {tf.saved_model.SERVING}, list(names))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # Folding a norm's gamma into the next FULLY_CONNECTED would give a tied embedding a second (lm_head) table.
    keep_mul_and_fc_apart(converter)
    return converter


Lowerable = tuple[str, ExportedProgram, Sequence[str], Sequence[str]]  # name, program, input names, output names


def export_signatures(
    step: nn.Module,
    programs: Iterable[Lowerable],
    path: Path,
    recipe: QuantConfig,
    components: Mapping[str, str],
    weights: WeightSource | Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """Exported programs, all over `step`'s weights, as one multi-signature flatbuffer at `path`, quantized by
    `recipe` over the kind's `components` (zoo/export/recipe.py), written atomically; returns the signature names.
    `weights`: a source keyed by `step`'s state names for its meta parameters (None: the step's own tensors).

    Peak memory is the output plus one float weight and one working set at a time: the converter sees the graphs
    only (weights are signature inputs, shapes from the possibly meta tensors) and bake.py puts in stand-ins; each
    program is lowered as `programs` yields it and dropped, the TF functions once saved, the converter's buffers
    once it returns (release_memory); then each weight is read once, quantized and dropped (quantize.py), or read
    as it is written (recipe none), and the quantizer writes its output to a file as it packs it.
    """
    source = weights if isinstance(weights, ModuleWeights) else ModuleWeights(step, weights)
    specs = state_tensors(step)
    functions = {name: tf_signature(program, specs, inputs, outputs) for name, program, inputs, outputs in programs}
    names = list(functions)
    with scratch(path) as tmp:
        saved_model = str(tmp / "saved_model")
        tf.saved_model.save(tf.Module(), saved_model, signatures=functions)
        del functions
        release_memory()
        graph = converter_for(saved_model, names).convert()
        release_memory()
        baked, pending = bake(graph, source)
        del graph
        if recipe.mode is QuantMode.none:
            write(baked, path, pending)
        else:
            quantized = quantize(baked, recipe, components, spill=tmp / "quantized.tflite", pending=pending)
            del baked, pending
            release_memory()
            write(quantized, path)
    return names


def op_counts(flatbuffer: bytes, signature: str | None = None) -> Counter[str]:
    """Operator names (builtin name, or CUSTOM:<code>) counted over all subgraphs, or over one signature's: to check
    builtins-only output, and the ops a step runs (the bench stage's `ops`)."""
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append(f"CUSTOM:{custom.decode()}" if custom else names[builtin])
    graphs = range(model.SubgraphsLength())
    if signature is not None:
        sigs = (model.SignatureDefs(i) for i in range(model.SignatureDefsLength()))
        graphs = [d.SubgraphIndex() for d in sigs if d.SignatureKey().decode() == signature]
    return Counter(
        codes[graph.Operators(j).OpcodeIndex()]
        for graph in (model.Subgraphs(i) for i in graphs)
        for j in range(graph.OperatorsLength())
    )
