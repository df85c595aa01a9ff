"""Quantization recipes (zoo/conf/quant/*.yaml) applied to an exported multi-signature float .tflite.

Every mode, fp16 included, goes through ai-edge-quantizer after conversion (`quantize`): the weights only exist
after zoo/export/bake.py puts them into the converted graph, and only the quantizer can scope a precision to a
component (embedding / attention / mlp / lm_head) or table and keep a tied embedding table one tensor. The
converter's int8 mode does neither: it stores one int8 copy of a tied table for the embedding GATHER and another
for the lm_head, and quantizes every GATHER table of >= 1024 elements (RoPE, masks) with no way to opt out.
Keep a tied table whole in the float model too: the converter folds the final norm's weight into the lm_head
matrix, a second float table, unless told not to (private.keep_mul_and_fc_apart).

Naming contract with the exporter: a weight op belongs to a component when the component's pattern (the kind's
`components`, zoo/kinds/; zoo/export/recipe.py checks a recipe against the model before any work)
is found in the op's scope (its output tensor names, as ai-edge-quantizer sees them) or in a constant input's
name. TF name scopes give both, e.g. `model.layers.3.mlp/down_proj/MatMul`. An op whose output is a signature
output is renamed `StatefulPartitionedCall:N`, so the lm_head of a tied model (weight named `arith.constantN`)
must not be the last op, or its pattern is lost and it takes the recipe's `mode`.
"""

from __future__ import annotations

import logging
import mmap
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np
from ai_edge_quantizer import qtyping
from ai_edge_quantizer.algorithm_manager import AlgorithmName
from torch import nn

from zoo.errors import ConfigError
from zoo.export.bake import Pending, unpack
from zoo.export.private import InMemoryQuantizer, flatbuffer_utils, schema, tfl_utils
from zoo.export.recipe import component_of
from zoo.export.rotation import factor_rotations
from zoo.schema import QuantConfig, QuantMode

log = logging.getLogger(__name__)

_Op = schema.BuiltinOperator
_OpName = qtyping.TFLOperationName


# The float matrix over block sums of an asymmetric int4 weight (zoo/export/asymmetric.py): small, kept float.
ZERO_POINT = r"\.zero_point\b"
SYMMETRIC = r"\.symmetric\b"  # its int4 matrix, on the blocks' grid

BLOCK_SIZE = {QuantMode.int4_block32: 32, QuantMode.int4_block64: 64, QuantMode.int4_block128: 128}
_WEIGHT_OPS = {_Op.FULLY_CONNECTED: _OpName.FULLY_CONNECTED, _Op.BATCH_MATMUL: _OpName.BATCH_MATMUL}


def zero_point_blocks(
    model: nn.Module, recipe: QuantConfig, components: Mapping[str, str]
) -> dict[str, tuple[int, float]]:
    """Linear modules that `recipe` makes asymmetric int4 (zoo/export/asymmetric.py): their block size and the
    recipe's outlier threshold."""
    if not recipe.zero_point:
        return {}
    blocks = {}
    for name, module in model.named_modules():
        mode = module_mode(recipe, components, name, module)
        if isinstance(module, nn.Linear) and mode in BLOCK_SIZE:
            blocks[name] = (BLOCK_SIZE[mode], recipe.outliers)
    return blocks


def module_mode(recipe: QuantConfig, components: Mapping[str, str], name: str, module: nn.Module) -> QuantMode:
    """The mode `recipe` gives the weight of module `name` (a Linear, an Embedding: its table), resolved as the
    survey of the flatbuffer's ops (`_survey`) resolves it for the op that module becomes; none for other modules."""
    if not isinstance(module, (nn.Linear, nn.Embedding)) or any(re.search(p, name) for p in recipe.keep_float):
        return QuantMode.none
    if isinstance(module, nn.Embedding):
        return _weight_mode(recipe, components, name, table=True)
    return _fitted(recipe, _weight_mode(recipe, components, name, table=False), module.in_features)


def _weight_mode(recipe: QuantConfig, components: Mapping[str, str], names: str, table: bool) -> QuantMode:
    """The mode of a weight op (or module) whose scope and input names (or module path) are `names`: a table
    (GATHER) takes the embedding component's mode if it is the embedding, else `tables`; a matrix its component's."""
    component = _component_in(names, components)
    if table:
        return _component_mode(recipe, component, names) if component == "embedding" else recipe.tables
    return _component_mode(recipe, component, names)


def _fitted(recipe: QuantConfig, mode: QuantMode, width: int) -> QuantMode:
    """`mode`, or the recipe's fallback for a blockwise mode whose block does not divide the `width` inputs."""
    return recipe.fallback if mode in BLOCK_SIZE and width % BLOCK_SIZE[mode] else mode


def rotation_block(recipe: QuantConfig, names: str, mode: QuantMode, width: int) -> int:
    """The Hadamard block the quantizer rotates a `width`-input weight op in (its largest power-of-two divisor,
    capped by `hadamard_max`; DECOMPOSED_HADAMARD_ROTATION), or 0 when the recipe does not rotate it."""
    if not _rotated(recipe, names, mode):
        return 0
    block = width & -width
    return min(block, recipe.hadamard_max) if recipe.hadamard_max else block


def quantize(
    float_model: qtyping.ModelT | bytes | bytearray,
    recipe: QuantConfig,
    components: Mapping[str, str],
    spill: Path | None = None,
    pending: Pending | None = None,
) -> qtyping.ModelT:
    """The float model (a model object, edited in place, or .tflite bytes) quantized by the recipe over the kind's
    `components`, its Hadamard rotations factored (zoo/export/rotation.py). With `spill`, the quantizer packs its
    output into that file as it goes and the buffers view it (bake.write drops their pages once written): never
    resident twice.

    `pending` (a baked model's weights not read yet, zoo/export/bake.py): each weight that every reader quantizes
    is read once, quantized for all of them and dropped (private.StreamedParams), so memory holds the quantized
    weights and one float weight; the weights no reader quantizes (norms, biases, tables of `tables: none`,
    `keep_float`, float zero-point matrices) are read once too and stay, as they are in the output."""
    if not isinstance(float_model, schema.ModelT):
        float_model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    plan, modes = _survey(float_model, recipe, components)
    streamed, kept = set(), set()
    if pending is not None:
        streamed = {b for b in pending.names if b in modes and all(m is not QuantMode.none for m, _ in modes[b])}
        kept = pending.names.keys() - streamed
    if not plan:
        for b in kept:
            float_model.buffers[b].data = pending.read(b)
        if recipe.keep_float:  # every weight op kept float on purpose (the finder's blame): a float file
            return float_model
        raise ConfigError(f"quant {recipe.name}: no weight op of this model to quantize: choose another recipe")
    qz = InMemoryQuantizer(float_model, streamed, pending.read if pending is not None else None, kept)
    for (mode, op_name, rotate, on_grid), scopes in plan.items():
        regex = "^(?:" + "|".join(re.escape(s) for s in scopes) + ")$"
        _add_config(qz, regex, op_name, mode, rotate, on_grid, recipe)
    data = qz.quantize(serialize_to_path=spill, enable_progress_bar=False, enable_progress_report=False).quantized_model
    _unzero_scales(data)
    quantized = unpack(data)
    factor_rotations(quantized)
    if isinstance(data, mmap.mmap):
        data.madvise(mmap.MADV_DONTNEED)  # pages the post-passes read go back to the file, read again when written
    return quantized


def _unzero_scales(data: bytearray) -> None:
    """An all-zero weight channel (e.g. an embedding's padding row) gets scale 0 from ai-edge-quantizer, its int8
    values 0/0 casts, and XNNPACK refuses the tensor: give it scale 1 and int8 zeros, exactly the zero channel it
    was. Edited in place in the flatbuffer's bytes (tensors stored inside the flatbuffer)."""
    model = schema.Model.GetRootAs(data, 0)
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            quant = tensor.Quantization()
            scale = quant.ScaleAsNumpy() if quant is not None else 0
            if isinstance(scale, int) or scale.all() or tensor.Type() != schema.TensorType.INT8:
                continue
            raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
            if not isinstance(raw, int):
                values = np.moveaxis(raw.view(np.int8).reshape(tensor.ShapeAsNumpy()), quant.QuantizedDimension(), 0)
                values[scale == 0] = 0
            scale[scale == 0] = 1.0


def _add_config(
    qz: InMemoryQuantizer,
    regex: str,
    op_name: _OpName,
    mode: QuantMode,
    rotate: bool,
    on_grid: bool,
    recipe: QuantConfig,
) -> None:
    if mode is QuantMode.fp16:
        qz.add_weight_only_config(regex, op_name, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        return
    if mode is QuantMode.int8_weight_only:
        qz.add_weight_only_config(regex, op_name, num_bits=8)
        return
    bits, granularity = 8, qtyping.QuantGranularity.CHANNELWISE
    if mode in BLOCK_SIZE:
        bits, granularity = 4, qtyping.QuantGranularity[f"BLOCKWISE_{BLOCK_SIZE[mode]}"]
    if not rotate:
        # zero points: weights already on their blocks' int4 grid, whose exact scales the recovery takes; other
        # int4 weights (a table, a matrix kept symmetric) get min-max blocks
        algorithm = AlgorithmName.DEQUANTIZED_WEIGHT_RECOVERY if on_grid else AlgorithmName.MIN_MAX_UNIFORM_QUANT
        qz.add_dynamic_config(regex, op_name, num_bits=bits, granularity=granularity, algorithm_key=algorithm)
        return
    # add_dynamic_config's settings plus the Hadamard block cap, which only the general call takes
    params = {"max_hadamard_size": recipe.hadamard_max} if recipe.hadamard_max else {}
    weights = qtyping.TensorQuantizationConfig(
        num_bits=bits, symmetric=True, granularity=granularity, algorithm_params=params
    )
    op_config = qtyping.OpQuantizationConfig(
        weight_tensor_config=weights, explicit_dequantize=False, compute_precision=qtyping.ComputePrecision.INTEGER
    )
    qz.update_quantization_recipe(
        regex, op_name, op_config=op_config, algorithm_key=AlgorithmName.DECOMPOSED_HADAMARD_ROTATION
    )


def _plan(
    model: qtyping.ModelT, recipe: QuantConfig, components: Mapping[str, str]
) -> dict[tuple[QuantMode, _OpName, bool, bool], list[str]]:
    """Op scopes per (mode, op type, Hadamard-rotated, on a zero-point grid); quantized GATHER tables become
    EMBEDDING_LOOKUP on the way."""
    return _survey(model, recipe, components)[0]


def _survey(
    model: qtyping.ModelT, recipe: QuantConfig, components: Mapping[str, str]
) -> tuple[dict[tuple[QuantMode, _OpName, bool, bool], list[str]], dict[int, set[tuple[QuantMode, bool]]]]:
    """The plan (`_plan`) and the (mode, rotated) pairs each weight op's weight buffer takes."""
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    plan: dict[tuple[QuantMode, _OpName, bool, bool], list[str]] = {}
    modes_per_buffer: dict[int, set[tuple[QuantMode, bool]]] = {}
    fallbacks = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            weight, op_name, mode = _weight_op(model, sg, op, codes[op.opcodeIndex], recipe, components)
            if weight is None:
                continue
            if _fitted(recipe, mode, weight.shape[-1]) is not mode:
                mode, fallbacks = recipe.fallback, fallbacks + 1
            scope = tfl_utils.get_op_scope(op, sg.tensors)
            if any(re.search(pattern, scope) for pattern in recipe.keep_float):
                mode = QuantMode.none
            if mode is QuantMode.none:
                modes_per_buffer.setdefault(weight.buffer, set()).add((mode, False))
                continue
            rotate = _rotated(recipe, _names(sg, op), mode)
            modes_per_buffer.setdefault(weight.buffer, set()).add((mode, rotate))
            if op_name is _OpName.EMBEDDING_LOOKUP:
                _to_embedding_lookup(model, codes, sg, op)
            # the symmetric half of an asymmetric int4 matrix (zoo/export/asymmetric.py) is on its blocks' grid
            on_grid = mode in BLOCK_SIZE and re.search(SYMMETRIC, _names(sg, op)) is not None
            plan.setdefault((mode, op_name, rotate, on_grid), []).append(scope)
    if any(
        len({rotate for m, rotate in modes if m is mode}) > 1
        for modes in modes_per_buffer.values()
        for mode, _ in modes
    ):
        raise ConfigError(
            f"quant {recipe.name}: hadamard rotates some uses of a shared weight (tied embedding?) but "
            "not others, which then read it rotated; match the weight's name (e.g. embed_tokens)"
        )
    if any(len(modes) > 1 for modes in modes_per_buffer.values()):
        log.warning(
            "quant %s: a shared weight (tied embedding?) takes several modes: ai-edge-quantizer then stores "
            "one copy per mode per signature",
            recipe.name,
        )
    if fallbacks:
        log.warning(
            "quant %s: %d weights not divisible by the block size take %s",
            recipe.name,
            fallbacks,
            recipe.fallback.value,
        )
    return plan, modes_per_buffer


def _rotated(recipe: QuantConfig, names: str, mode: QuantMode) -> bool:
    """Whether the weight op (its scope and input `names`) is Hadamard-rotated: a dynamic-mode op that a `hadamard`
    pattern matches, unless int4 with zero points (e.g. a 576-input matrix in int4_block128 takes the int8 fallback
    and can be rotated, a 2048-input one cannot). A rotated EMBEDDING_LOOKUP stores its table rotated and rotates
    back the rows it reads, so a tied table's lookup and lm_head (whose weight keeps the table's name) must be
    rotated both or neither: a pattern on the table's name (e.g. `embed_tokens`) matches both."""
    if mode in (QuantMode.fp16, QuantMode.int8_weight_only) or re.search(ZERO_POINT, names):
        return False
    if not any(re.search(pattern, names) for pattern in recipe.hadamard):
        return False
    if recipe.zero_point and mode in BLOCK_SIZE:
        log.info(
            "quant %s: %s not rotated: int4 with zero points (a rotation would move weights off their 4-bit grid)",
            recipe.name,
            names.split(";")[0],
        )
        return False
    return True


def _weight_op(
    model: qtyping.ModelT,
    sg: qtyping.SubGraphT,
    op: qtyping.OperatorT,
    code: int,
    recipe: QuantConfig,
    components: Mapping[str, str],
) -> tuple[Optional[qtyping.TensorT], Optional[_OpName], QuantMode]:
    """The op's constant weight (None if it has none), the quantizer's op type for it, and the recipe's mode."""
    if code == _Op.GATHER:
        mode = _weight_mode(recipe, components, _names(sg, op), table=True)
        return _const(model, sg, op.inputs[0]), _OpName.EMBEDDING_LOOKUP, mode
    if code in _WEIGHT_OPS:
        mode = _weight_mode(recipe, components, _names(sg, op), table=False)
        return _const(model, sg, op.inputs[1]), _WEIGHT_OPS[code], mode
    return None, None, QuantMode.none


def _names(sg: qtyping.SubGraphT, op: qtyping.OperatorT) -> str:
    """The op's scope and its inputs' names, where component and hadamard patterns are searched."""
    return ";".join(
        [tfl_utils.get_op_scope(op, sg.tensors)]
        + [tfl_utils.get_tensor_name(sg.tensors[i]) for i in op.inputs if i >= 0]
    )


def _component_in(names: str, components: Mapping[str, str]) -> Optional[str]:
    """The component whose pattern is found first in `names` (an op's scope and input names, or a module path);
    ZERO_POINT before all (its matrices have their own mode)."""
    if re.search(ZERO_POINT, names):
        return ZERO_POINT
    return component_of(names, components)


def _component_mode(recipe: QuantConfig, component: Optional[str], names: str = "") -> QuantMode:
    """The mode of a weight op in `component` whose scope and input names (or module path) are `names`: the
    zero-point matrices' own, else the first matching `overrides` entry, the component's, the recipe's."""
    if component == ZERO_POINT:
        return recipe.zero_points
    override = next((o.mode for o in recipe.overrides if re.search(o.pattern, names)), None)
    return override or (getattr(recipe.components, component) if component else None) or recipe.mode


def _const(model: qtyping.ModelT, sg: qtyping.SubGraphT, index: int) -> Optional[qtyping.TensorT]:
    """The tensor at `index` when it is a float32 constant of rank >= 2 (a weight matrix or a table)."""
    tensor = sg.tensors[index]
    if tensor.type != schema.TensorType.FLOAT32 or len(tensor.shape) < 2:
        return None
    return tensor if tfl_utils.get_tensor_data(tensor, model.buffers) is not None else None


def _to_embedding_lookup(model: qtyping.ModelT, codes: list[int], sg: qtyping.SubGraphT, op: qtyping.OperatorT):
    """GATHER(table, ids) as the equivalent EMBEDDING_LOOKUP(ids, table): the quantizer and the runtime support
    int8 per-row and int4 blockwise tables only for EMBEDDING_LOOKUP, which the TF converter never emits."""
    options, ids = op.builtinOptions, sg.tensors[op.inputs[1]]
    scope = tfl_utils.get_op_scope(op, sg.tensors)
    if options.axis != 0 or options.batchDims != 0 or len(ids.shape) != 1:
        raise ValueError(f"GATHER {scope}: a quantized table needs 1-D ids on axis 0 (e.g. gather with tokens[0])")
    if _Op.EMBEDDING_LOOKUP not in codes:
        opcode = schema.OperatorCodeT()
        opcode.builtinCode = opcode.deprecatedBuiltinCode = _Op.EMBEDDING_LOOKUP
        opcode.version = 1
        model.operatorCodes.append(opcode)
        codes.append(_Op.EMBEDDING_LOOKUP)
    op.opcodeIndex = codes.index(_Op.EMBEDDING_LOOKUP)
    op.inputs = [op.inputs[1], op.inputs[0]]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.NONE, None
