"""Hadamard rotations in factored form.

ai-edge-quantizer rotates an input as RESHAPE [rows, b] -> float FULLY_CONNECTED with the dense Hadamard matrix
H_b -> RESHAPE: b multiply-adds per element. In a prefill, SmolLM2's 512-wide blocks (down_proj) then cost as much
time as all its int8 matmuls. The Sylvester matrix factors, H_b = H_a (x) H_c (b = a c), so the same product is a
FULLY_CONNECTED with H_c over the last axis of [rows, a, c], a TRANSPOSE, one with H_a, and a TRANSPOSE back: a + c
multiply-adds per element (512 = 8 x 64: 72 instead of 512) and the same result up to float rounding.
"""

from __future__ import annotations

import numpy as np

from zoo.export.private import hadamard_matrix, schema
from zoo.export.private import transformation_utils as tu

_Op = schema.BuiltinOperator
_SUFFIX = b"_hadamard_matrix"  # the quantizer's name for its rotation matrices (insert_decomposed_hadamard_rotation)


def hadamard(size: int) -> np.ndarray:
    """The normalized Sylvester Hadamard matrix of a power-of-two `size`, as ai-edge-quantizer makes and stores it
    (its own function, so the match in `_rotation_size` is against exactly what it inserts)."""
    return hadamard_matrix(size).astype(np.float32)


def factor_rotations(model: schema.ModelT, inner: int = 64) -> int:
    """Every rotation FULLY_CONNECTED with a block b > `inner` replaced by factors H_(b/inner) and H_inner, in place;
    returns how many. Matrices that are not exactly the Sylvester H_b (e.g. randomized rotations) are left alone."""
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    dense, factored = set(), 0
    for graph in model.subgraphs:
        ops = []
        for op in graph.operators:
            size = _rotation_size(model, graph, op, codes)
            if size > inner:
                ops.extend(_factored(model, graph, op, size // inner, inner))
                dense.add(graph.tensors[op.inputs[1]].buffer)
                factored += 1
            else:
                ops.append(op)
        graph.operators = ops
    read = {graph.tensors[i].buffer for graph in model.subgraphs for op in graph.operators for i in op.inputs if i >= 0}
    for index in dense - read:  # the dense H_b no op reads any more: not carried in the file
        model.buffers[index].data = None
    return factored


def _rotation_size(model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT, codes: list[int]) -> int:
    """b when `op` is a bare FULLY_CONNECTED of a [rows, b] input with the quantizer's H_b, else 0."""
    if (
        codes[op.opcodeIndex] != _Op.FULLY_CONNECTED
        or len(op.inputs) < 2
        or max(op.inputs[2:], default=-1) >= 0
        or op.builtinOptions.fusedActivationFunction != schema.ActivationFunctionType.NONE
    ):
        return 0  # not a bare product x H: a bias or an activation would need keeping
    weight = graph.tensors[op.inputs[1]]
    if not (weight.name or b"").endswith(_SUFFIX) or len(weight.shape) != 2 or weight.shape[0] != weight.shape[1]:
        return 0
    data = model.buffers[weight.buffer].data
    size = int(weight.shape[0])
    if (
        data is None
        or len(graph.tensors[op.inputs[0]].shape) != 2
        or not np.array_equal(np.asarray(data).view(np.float32).reshape(size, size), hadamard(size))
    ):
        return 0
    return size


def _factored(
    model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT, outer: int, inner: int
) -> list[schema.OperatorT]:
    """x [rows, outer*inner] -> reshape [rows, outer, inner] -> FC H_inner -> transpose -> FC H_outer -> transpose
    -> reshape into the op's own output: x (H_outer (x) H_inner)."""
    x, out = op.inputs[0], op.outputs[0]
    rows, name = int(graph.tensors[x].shape[0]), graph.tensors[out].name
    blocks, swapped = [rows, outer, inner], [rows, inner, outer]
    steps = [
        (_Op.RESHAPE, [_const(model, graph, name + b"_blocks", np.array(blocks, np.int32))], blocks),
        (_Op.FULLY_CONNECTED, [_const(model, graph, name + b"_hadamard_inner", hadamard(inner))], blocks),
        (_Op.TRANSPOSE, [_const(model, graph, name + b"_swap", np.array([0, 2, 1], np.int32))], swapped),
        (_Op.FULLY_CONNECTED, [_const(model, graph, name + b"_hadamard_outer", hadamard(outer))], swapped),
        (_Op.TRANSPOSE, [_const(model, graph, name + b"_swap", np.array([0, 2, 1], np.int32))], blocks),
        (_Op.RESHAPE, [_const(model, graph, name + b"_rows", np.array(graph.tensors[out].shape, np.int32))], None),
    ]
    ops, current = [], x
    for code, extra, shape in steps:
        new = schema.OperatorT()
        new.opcodeIndex = tu.add_op_code(code, model.operatorCodes)
        new.inputs = [current, *extra]
        new.outputs = [
            out
            if shape is None
            else tu.add_new_activation_tensor(name + b"_factored", shape, schema.TensorType.FLOAT32, graph)
        ]
        if code == _Op.FULLY_CONNECTED:
            new.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
            new.builtinOptions = schema.FullyConnectedOptionsT()
            new.builtinOptions.keepNumDims = True
        ops.append(new)
        current = new.outputs[0]
    return ops


def _const(model: schema.ModelT, graph: schema.SubGraphT, name: bytes, data: np.ndarray) -> int:
    kind = schema.TensorType.FLOAT32 if data.dtype == np.float32 else schema.TensorType.INT32
    return tu.add_new_constant_tensor(name, data, kind, graph, model, allow_tensor_sharing=True)
