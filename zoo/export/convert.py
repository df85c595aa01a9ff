"""PyTorch decoder -> multi-signature .tflite: torch.export per signature, our lowering to TF, the TFLite converter.

Weights live once, as `tf.Variable`s shared by every signature, so N prefill lengths cost no extra weight bytes.
Only TFLite builtin ops are allowed. The quant recipe is applied here once: its converter flags (fp16) before
conversion, its ai-edge-quantizer modes on the converted bytes (zoo/export/quantize.py).
"""
from __future__ import annotations

import gc
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python.lite import TFLiteSavedModelConverterV2
from torch import nn

from zoo.config import QuantConfig
from zoo.export.asymmetric import with_zero_points
from zoo.export.quantize import configure_converter, quantize, zero_point_blocks
from zoo.export.signatures import (
    Logits,
    Signature,
    Step,
    export_step,
    io_names,
    plan,
    tf_signature,
)
from zoo.report import write_atomic


def to_variables(module: nn.Module) -> dict[str, tf.Variable]:
    """One tf.Variable per parameter and buffer (non-persistent ones too), keyed by torch state name."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return {name: tf.Variable(t.detach().numpy(), trainable=False, name=name.replace(".", "_"))
            for name, t in tensors.items()}


class SavedModelConverter(TFLiteSavedModelConverterV2):
    """The TF SavedModel converter minus its Python `tf.saved_model.load`, which only fetches debug info but
    materialises every variable once more in this process right before the C++ converter loads them again."""

    def convert(self) -> bytes:
        graph_def, _, _ = self._load_saved_model(self.saved_model_dir, self._saved_model_tags)
        self._debug_info = None
        return self._convert_from_saved_model(graph_def)


def converter_for(saved_model: str, names: Sequence[str], recipe: QuantConfig) -> tf.lite.TFLiteConverter:
    """Builtins-only converter of the named signatures, with the recipe's converter-time flags."""
    # Not `from_saved_model`, which keeps a loaded Python copy of every variable for the whole conversion.
    converter = SavedModelConverter(saved_model, {tf.saved_model.SERVING}, list(names))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # Folding a norm's gamma into the next FULLY_CONNECTED would give a tied embedding a second (lm_head) table.
    converter._experimental_disable_fuse_mul_and_fc = True
    configure_converter(converter, recipe)
    return converter


def save_signatures(model: nn.Module, directory: str, kv_cache_max: int, signatures: Sequence[Signature],
                    mask_as_input: bool) -> None:
    """torch.export and lower every signature over one set of tf.Variables, saved as a SavedModel.

    Returning nothing lets the torch programs, traced graphs and variables be freed before the converter runs.
    """
    num_layers = model.arch.num_layers
    steps = {s: Step(model, s.logits) for s in signatures}
    programs = {s: export_step(steps[s], s, kv_cache_max, mask_as_input) for s in signatures}
    state = to_variables(next(iter(steps.values())))
    module = tf.Module()
    module.weights = list(state.values())
    functions = {
        s.name: tf_signature(programs[s], state, *io_names(num_layers, s.logits, mask_as_input)) for s in signatures
    }
    tf.saved_model.save(module, directory, signatures=functions)


def op_counts(flatbuffer: bytes) -> Counter[str]:
    """Operator names (builtin name, or CUSTOM:<code>) counted over all subgraphs: to check builtins-only output."""
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append(f"CUSTOM:{custom.decode()}" if custom else names[builtin])
    return Counter(
        codes[graph.Operators(j).OpcodeIndex()]
        for graph in (model.Subgraphs(i) for i in range(model.SubgraphsLength()))
        for j in range(graph.OperatorsLength())
    )


def export_tflite(
    model: nn.Module,
    path: str | os.PathLike,
    kv_cache_max: int,
    prefill_lens: Sequence[int],
    prefill_logits: Logits = "last",
    mask_as_input: bool = False,
    recipe: QuantConfig = QuantConfig(),
) -> Path:
    """Exports `model` (a zoo Decoder) with signatures prefill_{T} and decode, quantized by `recipe`.

    Peak memory is lowest when the caller keeps no reference to `model`: its weights are then freed before the
    converter (~3x the fp32 weight bytes) runs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signatures = plan(prefill_lens, prefill_logits)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".saved_model.") as saved_model:
        model = with_zero_points(model, zero_point_blocks(model, recipe))
        save_signatures(model, saved_model, kv_cache_max, signatures, mask_as_input)
        del model  # the last reference when the caller passed a model it does not keep: frees torch weights
        gc.collect()
        data = converter_for(saved_model, [s.name for s in signatures], recipe).convert()
    write_atomic(path, quantize(data, recipe))
    return path
