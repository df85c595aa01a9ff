"""Factored Hadamard rotations (zoo/export/rotation.py) compute what the quantizer's dense ones do."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from zoo.export.convert import op_counts
from zoo.export.rotation import factor_rotations, hadamard


def _rotation(rows: int, size: int) -> bytes:
    """x [rows, size] @ H_size as the quantizer inserts it: a float FULLY_CONNECTED with a `*_hadamard_matrix`."""
    matrix = tf.constant(hadamard(size))
    fn = tf.function(
        lambda x: {"y": tf.matmul(x, matrix)}, input_signature=[tf.TensorSpec([rows, size], tf.float32, "x")]
    )
    model = flatbuffer_utils.read_model_from_bytearray(
        tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], tf.Module()).convert()
    )
    graph = model.subgraphs[0]
    for op in graph.operators:
        if len(op.inputs) > 1 and list(graph.tensors[op.inputs[1]].shape) == [size, size]:
            graph.tensors[op.inputs[1]].name = b"x_hadamard_matrix"
    return model


def _run(model, x: np.ndarray) -> np.ndarray:
    packed = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return Interpreter(model_content=packed).get_signature_runner()(x=x)["y"]


@pytest.mark.parametrize("rows, size", [(3, 512), (128, 256), (5, 128)])
def test_factored_rotation_equals_the_dense_one(rows, size):
    x = np.random.default_rng(0).normal(size=(rows, size)).astype(np.float32)
    model = _rotation(rows, size)
    dense = _run(model, x)
    np.testing.assert_allclose(dense, x @ hadamard(size), atol=1e-5)
    assert factor_rotations(model) == 1
    np.testing.assert_allclose(_run(model, x), dense, atol=1e-5)
    packed = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    assert op_counts(packed)["TRANSPOSE"] == 2 and op_counts(packed)["FULLY_CONNECTED"] == 2
    assert max(len(b.data) for b in model.buffers if b.data is not None) == 64 * 64 * 4  # no dense H_size left


def test_64_blocks_and_other_matrices_stay():
    model = _rotation(4, 64)
    assert factor_rotations(model) == 0
    model = _rotation(4, 256)
    weight = next(t for t in model.subgraphs[0].tensors if t.name == b"x_hadamard_matrix")
    model.buffers[weight.buffer].data = (-hadamard(256)).reshape(-1).view(np.uint8)  # not the Sylvester matrix
    assert factor_rotations(model) == 0
