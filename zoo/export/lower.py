"""Lowering of an exported ATen graph (torch.export) to TensorFlow ops that the TFLite converter maps to builtins.

An FX-graph interpreter: `OPS` maps each ATen overload to one small function of TF tensors and Python values.
Parameters and buffers are read from a dict of `tf.Variable`s keyed by their torch state name, so every signature
traced from the same dict shares one copy of the weights in the flatbuffer. torch int64 becomes TF int32.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import tensorflow as tf
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

import zoo.architectures.layers  # noqa: F401  registers torch.ops.zoo.filled_slots, lowered below
from zoo.export.private import dynamic_update_slice

aten = torch.ops.aten

DTYPES: dict[torch.dtype, tf.DType] = {
    torch.float32: tf.float32,
    torch.float16: tf.float16,
    torch.int64: tf.int32,  # TFLite kernels index with int32; positions never exceed 2**31
    torch.int32: tf.int32,
    torch.bool: tf.bool,
}


class LoweringError(NotImplementedError):
    """An ATen op (or a use of one) that has no TF lowering; the message is one line naming op and module."""


def tf_dtype(dtype: torch.dtype | None, default: tf.DType = tf.float32) -> tf.DType:
    if dtype is None:
        return default
    if dtype not in DTYPES:
        raise LoweringError(f"dtype {dtype} has no TF lowering (table DTYPES in zoo/export/lower.py)")
    return DTYPES[dtype]


def _axis(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def _operands(a: Any, b: Any) -> tuple[Any, Any]:
    """Python scalars take the dtype of the tensor operand; an int tensor meeting a float scalar becomes float."""
    if isinstance(a, tf.Tensor) and isinstance(b, tf.Tensor):
        if a.dtype != b.dtype and a.dtype.is_floating != b.dtype.is_floating:
            return (a, tf.cast(b, a.dtype)) if a.dtype.is_floating else (tf.cast(a, b.dtype), b)
        return a, b
    t, s = (a, b) if isinstance(a, tf.Tensor) else (b, a)
    if isinstance(s, float) and t.dtype.is_integer:
        t = tf.cast(t, tf.float32)
    s = tf.constant(s, dtype=t.dtype)
    return (t, s) if isinstance(a, tf.Tensor) else (s, t)


def _binary(fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable[..., tf.Tensor]:
    def lowered(a: Any, b: Any, alpha: float = 1) -> tf.Tensor:
        if alpha != 1:
            b = b * alpha
        return fn(*_operands(a, b))

    return lowered


def _undo_transpose(x: tf.Tensor) -> tuple[tf.Tensor, bool]:
    """(y, adjoint) with x == adjoint(y) when x is a transpose swapping the last two axes of something cheaper.

    Lets BATCH_MATMUL read K/V caches through its adj flags instead of a materialised TRANSPOSE of the cache.
    """
    if x.op.type != "Transpose":
        return x, False
    perm = tf.get_static_value(x.op.inputs[1])
    if perm is None:
        return x, False
    perm = list(perm)
    perm[-2], perm[-1] = perm[-1], perm[-2]
    src = x.op.inputs[0]
    if perm == list(range(len(perm))):
        return src, True
    if perm[:-2] == list(range(len(perm) - 2)):  # swapped inner axes only: the original is as cheap
        return x, False
    return tf.transpose(src, perm), True


def matmul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    a, adj_a = _undo_transpose(a)
    b, adj_b = _undo_transpose(b)
    return tf.linalg.matmul(a, b, adjoint_a=adj_a, adjoint_b=adj_b)


def linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """x @ W^T (+ b) on 2-D x, which the converter turns into FULLY_CONNECTED reading W [out, in] as stored."""
    out_dim, in_dim = weight.shape
    y = tf.linalg.matmul(tf.reshape(x, [-1, in_dim]), weight, transpose_b=True)
    if bias is not None:
        y = y + bias
    return tf.reshape(y, [*x.shape[:-1], out_dim])


def index_copy(x: tf.Tensor, dim: int, index: tf.Tensor, source: tf.Tensor) -> tf.Tensor:
    """Writes `source` at index[0] along `dim`: DYNAMIC_UPDATE_SLICE (KV-cache positions are contiguous)."""
    dim = _axis(dim, x.shape.rank)
    starts = [index[0] if d == dim else tf.constant(0, index.dtype) for d in range(x.shape.rank)]
    return dynamic_update_slice(x, tf.cast(source, x.dtype), tf.stack(starts))


def embedding(weight: tf.Tensor, indices: tf.Tensor, *_: Any) -> tf.Tensor:
    """GATHER with 1-D ids on axis 0, the form ai-edge-quantizer can turn into a quantized EMBEDDING_LOOKUP."""
    rows = tf.gather(weight, tf.reshape(indices, [-1]))
    if indices.shape.is_fully_defined():
        return tf.reshape(rows, indices.shape + weight.shape[1:])
    return tf.reshape(rows, tf.concat([tf.shape(indices), weight.shape[1:]], 0))  # T5's bias over the filled slots


def index(x: tf.Tensor, indices: Sequence[tf.Tensor | None]) -> tf.Tensor:
    """Advanced indexing with a single index tensor (leading Nones allowed): a GATHER."""
    used = [i for i, t in enumerate(indices) if t is not None]
    if len(used) != 1:
        raise LoweringError(f"aten.index.Tensor with {len(used)} index tensors (only one is lowered)")
    return tf.gather(x, indices[used[0]], axis=used[0])


def _clamp(i: int, size: int) -> int:
    return max(0, min(i + size if i < 0 else i, size))


def slice_(
    x: tf.Tensor, dim: int = 0, start: int | None = None, end: int | tf.Tensor | None = None, step: int = 1
) -> tf.Tensor:
    """A STRIDED_SLICE; an `end` known only at run time (a cache cut to its filled slots) makes a SLICE of that size."""
    dim = _axis(dim, x.shape.rank)
    size = x.shape[dim]
    if isinstance(end, tf.Tensor):
        if start or step != 1:
            raise LoweringError("aten.slice.Tensor with a run-time end is lowered from start 0 with step 1 only")
        sizes = [tf.cast(end, tf.int32) if d == dim else tf.constant(n) for d, n in enumerate(x.shape)]
        return tf.slice(x, [0] * x.shape.rank, tf.stack(sizes))  # explicit sizes keep the other axes static
    start, end = _clamp(start or 0, size), size if end is None else _clamp(end, size)
    if start == 0 and end == size and step == 1:
        return x
    return x[(slice(None),) * dim + (slice(start, end, step),)]


def filled_slots(input_pos: tf.Tensor, kv_max: int, multiple: int) -> tf.Tensor:
    """zoo::filled_slots (zoo/architectures/layers.py): RANGE over the filled slots rounded up to `multiple`."""
    n = (tf.reduce_max(input_pos) + multiple) // multiple * multiple  # ceil((last + 1) / multiple) * multiple
    return tf.range(tf.minimum(n, kv_max), dtype=input_pos.dtype)


def sym_size(x: tf.Tensor, dim: int) -> int | tf.Tensor:
    """A dimension: a Python int when static, else the run-time size (a scalar tensor)."""
    return x.shape[dim] if x.shape[dim] is not None else tf.shape(x, out_type=tf.int32)[dim]


def split_with_sizes(x: tf.Tensor, sizes: Sequence[int], dim: int = 0) -> list[tf.Tensor]:
    """One static STRIDED_SLICE per part. tf.split would make a SPLIT_V, which XNNPACK does not take: each one cut
    the delegated graph in two and ran as a single-threaded copy (fused q/k/v and gate/up, every layer)."""
    bounds = [0, *itertools.accumulate(sizes)]
    return [slice_(x, dim, a, b) for a, b in itertools.pairwise(bounds)]


def split(x: tf.Tensor, size: int, dim: int = 0) -> list[tf.Tensor]:
    total = x.shape[_axis(dim, x.shape.rank)]
    return split_with_sizes(x, [min(size, total - i) for i in range(0, total, size)], dim)


def chunk(x: tf.Tensor, chunks: int, dim: int = 0) -> list[tf.Tensor]:
    total = x.shape[_axis(dim, x.shape.rank)]
    return split(x, -(-total // chunks), dim)


def permute(x: tf.Tensor, dims: Sequence[int]) -> tf.Tensor:
    perm = [_axis(d, x.shape.rank) for d in dims]
    return x if perm == list(range(len(perm))) else tf.transpose(x, perm)


def transpose(x: tf.Tensor, d0: int, d1: int) -> tf.Tensor:
    perm = list(range(x.shape.rank))
    d0, d1 = _axis(d0, x.shape.rank), _axis(d1, x.shape.rank)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permute(x, perm)


def reshape(x: tf.Tensor, shape: Sequence[int | tf.Tensor]) -> tf.Tensor:
    """A size known only at run time (the filled cache slots) becomes -1, so every other axis stays static."""
    shape = [-1 if isinstance(s, tf.Tensor) else s for s in shape]
    if shape.count(-1) > 1:
        raise LoweringError(f"reshape to {shape}: more than one size unknown before run time")
    return x if list(x.shape) == shape else tf.reshape(x, shape)


def repeat(x: tf.Tensor, repeats: Sequence[int]) -> tf.Tensor:
    lead = len(repeats) - x.shape.rank
    x = tf.reshape(x, [1] * lead + list(x.shape)) if lead else x
    return x if all(r == 1 for r in repeats) else tf.tile(x, list(repeats))


def mean(x: tf.Tensor, dims: Sequence[int] | None = None, keepdim: bool = False, dtype: Any = None) -> tf.Tensor:
    return tf.reduce_mean(x, axis=None if dims is None else list(dims), keepdims=keepdim)


def reduce_sum(x: tf.Tensor, dims: Sequence[int] | None = None, keepdim: bool = False, dtype: Any = None) -> tf.Tensor:
    return tf.reduce_sum(x, axis=None if dims is None else list(dims), keepdims=keepdim)


def clamp(x: tf.Tensor, min: float | None = None, max: float | None = None) -> tf.Tensor:
    """MAXIMUM / MINIMUM with a constant of x's dtype."""
    if min is not None:
        x = tf.maximum(x, tf.constant(min, x.dtype))
    return x if max is None else tf.minimum(x, tf.constant(max, x.dtype))


def power(x: tf.Tensor, exponent: float) -> tf.Tensor:
    """Square as a MUL: exact, where POW goes through exp/log."""
    return x * x if exponent == 2 else tf.pow(x, tf.constant(exponent, x.dtype))


def layer_norm(
    x: tf.Tensor,
    shape: Sequence[int],
    weight: tf.Tensor | None = None,
    bias: tf.Tensor | None = None,
    eps: float = 1e-5,
    cudnn_enable: bool = True,
) -> tf.Tensor:
    axes = list(range(-len(shape), 0))
    centred = x - tf.reduce_mean(x, axis=axes, keepdims=True)
    y = centred * tf.math.rsqrt(tf.reduce_mean(centred * centred, axis=axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def gelu(x: tf.Tensor, approximate: str = "none") -> tf.Tensor:
    return tf.nn.gelu(x, approximate=approximate == "tanh")


def softmax(x: tf.Tensor, dim: int, half_to_float: bool = False) -> tf.Tensor:
    return tf.nn.softmax(x, axis=dim)


def arange(*args: int, dtype: torch.dtype | None = None, **_: Any) -> tf.Tensor:
    return tf.range(*args, dtype=tf_dtype(dtype, tf.int32))


def full(size: Sequence[int], fill_value: float, dtype: torch.dtype | None = None, **_: Any) -> tf.Tensor:
    default = tf.int32 if isinstance(fill_value, int) and not isinstance(fill_value, bool) else tf.float32
    return tf.fill(list(size), tf.constant(fill_value, tf_dtype(dtype, default)))


def zeros(size: Sequence[int], dtype: torch.dtype | None = None, **_: Any) -> tf.Tensor:
    return tf.zeros(list(size), tf_dtype(dtype))


def to_dtype(x: tf.Tensor, dtype: torch.dtype | None = None, **_: Any) -> tf.Tensor:
    return x if dtype is None else tf.cast(x, tf_dtype(dtype))


def where(cond: tf.Tensor, a: Any, b: Any) -> tf.Tensor:
    a, b = _operands(a, b)
    return tf.where(cond, a, b)


def identity(x: Any, *_: Any, **__: Any) -> Any:
    return x


OPS: dict[Any, Callable[..., Any]] = {
    operator.getitem: operator.getitem,
    aten.add.Tensor: _binary(tf.add),
    aten.add.Scalar: _binary(tf.add),
    aten.sub.Tensor: _binary(tf.subtract),
    aten.sub.Scalar: _binary(tf.subtract),
    aten.rsub.Scalar: lambda a, b, alpha=1: _binary(tf.subtract)(b, a * alpha),
    aten.mul.Tensor: _binary(tf.multiply),
    aten.mul.Scalar: _binary(tf.multiply),
    aten.div.Tensor: _binary(tf.divide),
    aten.div.Scalar: _binary(tf.divide),
    aten.le.Tensor: _binary(tf.less_equal),
    aten.le.Scalar: _binary(tf.less_equal),
    aten.lt.Tensor: _binary(tf.less),
    aten.lt.Scalar: _binary(tf.less),
    aten.ge.Tensor: _binary(tf.greater_equal),
    aten.ge.Scalar: _binary(tf.greater_equal),
    aten.gt.Tensor: _binary(tf.greater),
    aten.gt.Scalar: _binary(tf.greater),
    aten.eq.Tensor: _binary(tf.equal),
    aten.eq.Scalar: _binary(tf.equal),
    aten.__and__.Tensor: tf.logical_and,
    aten.bitwise_and.Tensor: tf.logical_and,
    aten.logical_and.default: tf.logical_and,
    aten.__or__.Tensor: tf.logical_or,
    aten.bitwise_or.Tensor: tf.logical_or,
    aten.logical_not.default: tf.logical_not,
    aten.neg.default: tf.negative,
    aten.rsqrt.default: tf.math.rsqrt,
    aten.sqrt.default: tf.sqrt,
    aten.exp.default: tf.exp,
    aten.log.default: tf.math.log,
    aten.abs.default: tf.abs,
    aten.clamp.default: clamp,
    aten.cos.default: tf.cos,
    aten.sin.default: tf.sin,
    aten.tanh.default: tf.tanh,
    aten.sigmoid.default: tf.sigmoid,
    aten.silu.default: tf.nn.silu,
    aten.relu.default: tf.nn.relu,
    aten.gelu.default: gelu,
    aten.pow.Tensor_Scalar: power,
    aten.mean.dim: mean,
    aten.sum.dim_IntList: reduce_sum,
    aten.softmax.int: softmax,
    aten._softmax.default: softmax,
    aten.layer_norm.default: layer_norm,
    aten.linear.default: linear,
    aten.matmul.default: matmul,
    aten.bmm.default: matmul,
    aten.embedding.default: embedding,
    aten.index.Tensor: index,
    aten.index_copy.default: index_copy,
    aten.cat.default: lambda xs, dim=0: tf.concat(list(xs), axis=dim),
    aten.split_with_sizes.default: split_with_sizes,
    aten.split.Tensor: split,
    aten.chunk.default: chunk,
    aten.slice.Tensor: slice_,
    aten.narrow.default: lambda x, dim, start, length: slice_(x, dim, start, start + length),
    aten.select.int: lambda x, dim, i: tf.gather(x, i, axis=_axis(dim, x.shape.rank)),
    aten.permute.default: permute,
    aten.transpose.int: transpose,
    aten.t.default: lambda x: transpose(x, 0, 1),
    aten.view.default: reshape,
    aten.reshape.default: reshape,
    aten._unsafe_view.default: reshape,
    aten.unsqueeze.default: lambda x, dim: tf.expand_dims(x, _axis(dim, x.shape.rank + 1)),
    aten.squeeze.dim: lambda x, dim: tf.squeeze(x, _axis(dim, x.shape.rank)),
    aten.expand.default: lambda x, size: tf.broadcast_to(x, [s if s != -1 else x.shape[i] for i, s in enumerate(size)]),
    aten.repeat.default: repeat,
    aten.where.self: where,
    aten.arange.default: arange,
    aten.arange.start: arange,
    aten.arange.start_step: arange,
    aten.full.default: full,
    aten.zeros.default: zeros,
    aten.scalar_tensor.default: lambda value, dtype=None, **_: tf.constant(value, tf_dtype(dtype)),
    aten._to_copy.default: to_dtype,
    aten.to.dtype: lambda x, dtype, *_, **__: to_dtype(x, dtype),
    aten.type_as.default: lambda x, other: tf.cast(x, other.dtype),
    aten.alias.default: identity,
    aten.clone.default: identity,
    aten.contiguous.default: identity,
    aten.detach.default: identity,
    aten.detach_.default: identity,
    aten.lift_fresh_copy.default: identity,
    aten.dropout.default: identity,
    aten._assert_tensor_metadata.default: lambda *_, **__: None,  # a trace-time check, nothing to compute
    aten._assert_scalar.default: lambda *_, **__: None,  # torch.export's range assert on a run-time size
    aten.sym_size.int: sym_size,
    operator.ge: operator.ge,  # comparisons of run-time sizes, feeding only the asserts above
    operator.le: operator.le,
    torch.ops.zoo.filled_slots.default: filled_slots,
}


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return (next(reversed(stack.values()))[0] or "<root>") if stack else "<unknown module>"


def _scope(node: torch.fx.Node) -> AbstractContextManager:
    """TF name scope of the node's module path (e.g. `decoder.model.layers.3.mlp.down_proj`): op names then say
    which component a weight belongs to, which scoped quantization recipes rely on."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return tf.name_scope(path) if path else contextlib.nullcontext()


def _op(node: torch.fx.Node) -> Callable[..., Any]:
    fn = OPS.get(node.target)
    if fn is None:
        raise LoweringError(
            f"no TF lowering for ATen op {node.target} (from module {_module_path(node)}); "
            "add it to the op table OPS in zoo/export/lower.py"
        )
    return fn


def _lower_node(node: torch.fx.Node, env: dict[str, Any]) -> Any:
    fn = _op(node)
    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: env[n.name])
    kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "pin_memory", "layout", "memory_format")}
    try:
        return fn(*args, **kwargs)
    except LoweringError as e:
        raise LoweringError(f"{e} (from module {_module_path(node)})") from None


def validate_ops(program: ExportedProgram) -> None:
    """Raises LoweringError for the first op without a lowering, before any TF tracing is spent on the graph."""
    for node in program.graph.nodes:
        if node.op == "call_function":
            _op(node)


def used_placeholders(program: ExportedProgram) -> set[str]:
    """Inputs some op reads: a signature's weights are those its own graph uses (an encoder's `encode` reads no
    decoder weight), so no signature carries a weight tensor it never reads."""
    return {n.name for n in program.graph.nodes if n.op == "placeholder" and n.users}


def used_weights(program: ExportedProgram) -> set[str]:
    """Torch state names of the parameters and buffers the program reads."""
    used = used_placeholders(program)
    return {
        spec.target
        for spec in program.graph_signature.input_specs
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and spec.arg.name in used
    }


def lower(program: ExportedProgram, state: Mapping[str, tf.Variable | tf.Tensor]) -> Callable[..., list[tf.Tensor]]:
    """A function of the program's user inputs (TF tensors, in order) returning its user outputs (a list).

    `state` holds every parameter and buffer by torch state name; lifted constants (small literals such as
    `torch.tensor(scale)`) become TF constants.
    """
    validate_ops(program)
    signature = program.graph_signature
    if {spec.kind for spec in signature.output_specs} - {OutputKind.USER_OUTPUT}:
        raise LoweringError("exported program mutates buffers; the lowering expects a functional program")
    known = (InputKind.USER_INPUT, InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
    if other := [spec.arg.name for spec in signature.input_specs if spec.kind not in known]:
        raise LoweringError(f"exported program has inputs of unsupported kinds: {other}")
    user_inputs = [spec.arg.name for spec in signature.input_specs if spec.kind in (InputKind.USER_INPUT,)]
    lifted = {
        spec.arg.name: spec.target
        for spec in signature.input_specs
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and spec.arg.name in used_placeholders(program)
    }
    constants = {
        spec.arg.name: program.constants[spec.target]
        for spec in signature.input_specs
        if spec.kind in (InputKind.CONSTANT_TENSOR,)
    }

    def lowered(*inputs: tf.Tensor) -> list[tf.Tensor]:
        env: dict[str, Any] = dict(zip(user_inputs, inputs, strict=True))
        for name, target in lifted.items():
            with tf.name_scope(target):  # the frozen weight is then named after its torch state name
                env[name] = tf.convert_to_tensor(state[target])
        env.update({name: tf.constant(t.detach().numpy(), tf_dtype(t.dtype)) for name, t in constants.items()})
        for node in program.graph.nodes:
            if node.op == "call_function":
                with _scope(node):
                    env[node.name] = _lower_node(node, env)
            elif node.op == "output":
                return [env[n.name] for n in node.args[0]]
        raise LoweringError("exported graph has no output node")

    return lowered
