"""Every call zoo makes into private or unstable parts of ai-edge-quantizer, the TF converter and ai-edge-litert,
checked at import against the versions it was written for: on an upgrade, this file is what to read again.

PINS are pyproject.toml's pins of those packages (tests/test_private.py keeps them equal; an installed package
carries no pyproject.toml to read them from). The entries, what each is and why we need it:
- schema: ai_edge_litert.schema_py_generated, the generated TFLite flatbuffer object API (not a documented module;
  it follows the schema version): bake, quantize and rotation read and edit models with it, op_counts reads ops.
- flatbuffer_utils: ai_edge_litert.tools.flatbuffer_utils, a tool module: read_model_from_bytearray,
  convert_object_to_bytearray, and update_packed_buffer to point buffers at weights past the table (files > 2 GB).
- tfl_utils: ai_edge_quantizer.utils.tfl_flatbuffer_utils: get_op_scope / get_tensor_name / get_tensor_data, an
  op's scope and names as the quantizer's regexes match them (quantize._plan scopes each precision with them).
- transformation_utils: ai_edge_quantizer.transformations.transformation_utils: add_op_code and
  add_new_*_tensor, to insert the factored rotations the way the quantizer inserts its own (rotation.py).
- hadamard_matrix: ai-edge-quantizer's `_make_hadamard_matrix`: exactly the matrix it inserts, which rotation.py
  recognizes to factor.
- InMemoryQuantizer: Quantizer over a model object already in memory, setting the private attributes its
  constructor sets (which would parse a serialized copy: the weights twice in memory); with `streamed`, its
  parameters come from StreamedParams.
- StreamedParams: ParamsGenerator.generate_quantization_parameters with the ops visited weight by weight, each
  streamed weight read once, given to every op that reads it and dropped: the stock loop's body (recipe manager's
  get_quantization_configs, algorithm_manager.get_quantization_func, the generator's private
  `_tensor_quant_params_cache` (and its `_cache`, a weight's entries dropped once its readers are done: float
  casting's cached float16 copy is not the one its results use), `_update_model_quant_results`,
  `_get_params_for_no_quant_op`, `_post_process_results`, `buffer_to_tensors`); int4 values packed early with
  transformation_utils.pack_data. For ROW_BLOCKED algorithms, the get_tensor_quant_params that algorithm_manager's
  registered materialize partial carries (its first argument) is run on row blocks (in_row_blocks); the decomposed
  Hadamard rotation's materializers call `hadamard_rotation.get_tensor_quant_params` by name, so that module
  attribute is swapped for the row-blocked one during their call.
- InMemoryQuantizer._get_quantized_model: ModelModifier with its performer's private
  `_transformation_registration[QUANTIZE_TENSOR]` wrapped: buffers packed early are marked in the performer's
  `buffer_origin` (so it skips packing them), and the unpacked values of the rest are let go once packed, through
  `object.__setattr__` on the frozen UniformQuantParams (quantize_tensor reads only `.size` of them afterwards).
- SavedModelConverter: TFLiteSavedModelConverterV2 through its private _load_saved_model and
  _convert_from_saved_model, skipping the Python `tf.saved_model.load` that only fetches debug info.
- keep_mul_and_fc_apart: the converter's `_experimental_disable_fuse_mul_and_fc`: folding a norm's gamma into the
  lm_head would give a tied embedding a second table.
- dynamic_update_slice: tensorflow.compiler.tf2xla.python.xla's, which the converter lowers to TFLite's
  DYNAMIC_UPDATE_SLICE (the KV-cache write).

Public, so not here: ai_edge_quantizer's Quantizer (update_quantization_recipe included), qtyping and
algorithm_manager.AlgorithmName (the types and keys its public methods take); ai_edge_litert's interpreter,
compiled_model, hardware_accelerator and options; litert_lm; litert_lm_builder's LitertLmFileBuilder and the
LlmMetadata proto its add_llm_metadata reads; MediaPipe's genai bundler. zoo/runtime uses only those public names,
so it needs no adapter of its own (and must not import this build-side one).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
from collections.abc import Callable, Collection

import ml_dtypes
import numpy as np

from zoo.errors import VersionError

__all__ = [
    "PINS",
    "InMemoryQuantizer",
    "SavedModelConverter",
    "StreamedParams",
    "dynamic_update_slice",
    "flatbuffer_utils",
    "hadamard_matrix",
    "keep_mul_and_fc_apart",
    "schema",
    "tfl_utils",
    "transformation_utils",
    "validate_versions",
]
PINS = {"tensorflow-cpu": "2.21.0", "ai-edge-litert": "2.3.0", "ai-edge-quantizer": "0.10.0"}


def validate_versions() -> None:
    """A VersionError naming the first package installed at another version than its pin, and the fix."""
    for package, pin in PINS.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pin:
            raise VersionError(
                f"{package} is {installed}, zoo's calls into its private API are written for {pin}: "
                f"pip install {package}=={pin} (or ./setup.sh)"
            )


log = logging.getLogger(__name__)
validate_versions()  # before the imports below, which a moved private module would fail with a less useful error

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402
from ai_edge_quantizer import (  # noqa: E402
    algorithm_manager,
    model_modifier,
    params_generator,
    qtyping,
    quantizer,
    recipe_manager,
)
from ai_edge_quantizer.algorithms.uniform_quantize import hadamard_rotation  # noqa: E402
from ai_edge_quantizer.transformations import transformation_utils  # noqa: E402
from ai_edge_quantizer.transformations.insert_decomposed_hadamard_rotation import (  # noqa: E402
    _make_hadamard_matrix,
)
from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl_utils  # noqa: E402
from tensorflow.compiler.tf2xla.python.xla import dynamic_update_slice  # noqa: E402
from tensorflow.lite.python.lite import TFLiteSavedModelConverterV2  # noqa: E402


def hadamard_matrix(size: int) -> np.ndarray:
    """The normalized Sylvester Hadamard matrix of a power-of-two `size`, as the quantizer makes it."""
    return _make_hadamard_matrix(size)


class InMemoryQuantizer(quantizer.Quantizer):
    """ai-edge-quantizer over a model object already in memory, where its own constructor would parse a serialized
    copy. Sets what that constructor sets. With `streamed` (buffer indices whose data is a stand-in until `read`
    gives the weight's bytes), the parameters come from StreamedParams."""

    def __init__(
        self,
        model: qtyping.ModelT,
        streamed: Collection[int] = (),
        read: Callable[[int], np.ndarray] | None = None,
        kept: Collection[int] = (),
    ):  # pylint: disable=super-init-not-called
        self._streamed, self._read, self._kept, self._packed = streamed, read, kept, {}
        self._model_name = None
        self._float_model_buffer = memoryview(b"")  # read only by calibration and progress reports: neither runs
        self.previous_quantized_model_buffer = None
        self._float_model = model
        self._recipe_manager = recipe_manager.RecipeManager()
        self._result = quantizer.QuantizationResult([{}], None)
        self._quantize_called = False

    def _get_quantization_params(self, calibration_result=None, enable_progress_bar=None):
        if not self._streamed:
            return super()._get_quantization_params(calibration_result, enable_progress_bar)
        generator = StreamedParams(self._float_model, self._streamed, self._read, self._kept)
        params = generator.generate_quantization_parameters(self._recipe_manager, calibration_result)
        self._packed = generator.packed
        return params

    def _get_quantized_model(self, quant_params, serialize_to_path=None):
        """The stock model modifier, whose QUANTIZE_TENSOR finds the int4 weights StreamedParams packed already in
        their buffers, and lets go of other packed weights' unpacked values (a byte per value) once in the buffer,
        unless a buffer may be duplicated (its params then pack a second buffer)."""
        modifier = model_modifier.ModelModifier(self._float_model)
        duplicates = (qtyping.QuantTransformation.DUPLICATE_BUFFER, qtyping.QuantTransformation.DUPLICATE_TENSOR)
        release = bool(self._streamed) and not any(
            t in duplicates for p in quant_params.values() for c in p.consumers or [] for t in c.transformations
        )
        if release or self._packed:
            registry = modifier._transformation_performer._transformation_registration
            quantize_tensor = qtyping.QuantTransformation.QUANTIZE_TENSOR
            registry[quantize_tensor] = _releasing(registry[quantize_tensor], self._packed, release)
        return modifier.modify_model(quant_params, serialize_to_path=serialize_to_path)


def _packed(params) -> np.ndarray:
    """The params' sub-byte values packed as QUANTIZE_TENSOR packs them (the quantizer's own pack_data); the params
    then hold a zero view of their shape instead (`.size` is all that is read of them afterwards).

    Blockwise params are held as the file keeps them too: QUANTIZE_TENSOR writes the scales as bfloat16 (then
    float16) and no zero points, so float32 scales and int32 zeros (two thirds of the packed values' bytes again,
    1.3 GB for Mistral-7B int4) become bfloat16 scales, the same bytes once written, and a zero view."""
    data = params.quantized_data
    packed = transformation_utils.pack_data(params.num_bits, np.ravel(np.asarray(data)).view(np.uint8))
    object.__setattr__(params, "quantized_data", np.broadcast_to(np.zeros((), data.dtype), data.shape))
    if params.block_size:
        object.__setattr__(params, "scale", np.asarray(params.scale).astype(ml_dtypes.bfloat16))
        zero_point = params.zero_point
        if zero_point is not None and not np.any(zero_point):
            object.__setattr__(params, "zero_point", np.broadcast_to(np.zeros((), zero_point.dtype), zero_point.shape))
    return packed


def _releasing(quantize_tensor: Callable, packed: dict[int, object], release: bool) -> Callable:
    """QUANTIZE_TENSOR over buffers of which `packed` holds the params already packed into them (marked as packed,
    so it does not pack again), then, with `release`, a newly packed sub-byte weight's unpacked values dropped:
    later tensors on that buffer see the same params object and skip packing."""

    def transform(transformation_input):
        tensor = transformation_input.subgraph.tensors[transformation_input.tensor_id]
        params = transformation_input.quant_params
        if packed.get(tensor.buffer) is params:
            transformation_input.buffer_origin.setdefault(tensor.buffer, params)
        info = quantize_tensor(transformation_input)
        data = getattr(params, "quantized_data", None)
        if (
            release
            and data is not None
            and params.num_bits < 8
            and transformation_input.buffer_origin.get(tensor.buffer) is params
            and data.strides != (0,) * data.ndim
        ):
            object.__setattr__(params, "quantized_data", np.broadcast_to(np.zeros((), data.dtype), data.shape))
        return info

    return transform


_QUANTIZED_FIRST = (
    qtyping.QuantTransformation.QUANTIZE_TENSOR,
    qtyping.QuantTransformation.ADD_DEQUANTIZE,
    qtyping.QuantTransformation.DUPLICATE_BUFFER,
    qtyping.QuantTransformation.DUPLICATE_TENSOR,
)


# Weight algorithms whose parameters are per output row (channel) or per block within a row (a Hadamard rotation
# mixes the columns of each row, OCTAV clips per channel), so a matrix gives the same parameters in row blocks as
# whole; their transients are several float copies of the matrix (the zero-point recovery's abs/sort/diff/where,
# its validation's float64 dequantization, a rotated copy and OCTAV's masks). Mistral-7B's 14336x4096 int4 MLP
# matrices took the export's peak from the file's +3 GiB to +5.6 GiB; Gemma-2B int8's 256k-row table, rotated and
# clipped whole, took its export to 5.62 GiB (4.52 in row blocks). ROW_BLOCKED's materializers carry their
# get_tensor_quant_params as a partial's first argument; the decomposed Hadamard rotation's call it by its
# module-level name (StreamedParams._op_results swaps that).
ROW_BLOCKED = (
    algorithm_manager.AlgorithmName.DEQUANTIZED_WEIGHT_RECOVERY,
    algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT,
)
ROW_BLOCK_BYTES = 64 << 20


def in_row_blocks(tensor_params: Callable) -> Callable:
    """An algorithm's get_tensor_quant_params run on blocks of rows of a large weight (ROW_BLOCK_BYTES each), their
    parameters joined along the rows: equal to one call on the whole (tests/test_export_streamed.py)."""

    def blocked(op_info, tensor_quant_config, tensor_content=None, tensor_qsv=None):
        whole = tensor_content is None or tensor_content.ndim != 2 or tensor_content.nbytes <= ROW_BLOCK_BYTES
        if whole or tensor_quant_config.granularity is qtyping.QuantGranularity.TENSORWISE:
            return tensor_params(op_info, tensor_quant_config, tensor_content, tensor_qsv)
        rows = max(1, ROW_BLOCK_BYTES // tensor_content[0].nbytes)
        parts = [tensor_params(op_info, tensor_quant_config, tensor_content[:rows], tensor_qsv)]
        if np.shape(parts[0].scale)[:1] != (min(rows, len(tensor_content)),):  # not per row (e.g. per column)
            return tensor_params(op_info, tensor_quant_config, tensor_content, tensor_qsv)
        parts += [
            tensor_params(op_info, tensor_quant_config, tensor_content[start : start + rows], tensor_qsv)
            for start in range(rows, len(tensor_content), rows)
        ]
        return dataclasses.replace(
            parts[0],
            scale=np.concatenate([p.scale for p in parts]),
            zero_point=np.concatenate([p.zero_point for p in parts]),
            quantized_data=np.concatenate([p.quantized_data for p in parts]),
        )

    return blocked


class StreamedParams(params_generator.ParamsGenerator):
    """The quantizer's parameter pass with each streamed weight read once: `streamed` buffers hold a stand-in of
    their size (zeros nobody reads) until their turn; then `read(index)` gives the weight's bytes, every op reading
    it (all signatures) is materialized with the quantizer's own functions while they are held, and the stand-in is
    put back, so only the quantized results stay. The results then enter in the stock loop's op order (the same
    parameters, in the same order, as `ParamsGenerator.generate_quantization_parameters`).

    `kept` buffers (weights no reader quantizes: norms, biases, float matrices) are read too, and stay, as they are
    in the output: each just before the first streamed weight's readers that read it, the rest after the streamed
    ones (so a zero-point matrix is asked for after its int4 matrix, zoo/export/asymmetric.py). A streamed weight
    some consumer leaves float keeps its bytes as well. Float casting (fp16) builds a new float16 copy per
    consumer, past its own cache: equal copies of one weight are made one object.
    """

    def __init__(
        self,
        model: qtyping.ModelT,
        streamed: Collection[int],
        read: Callable[[int], np.ndarray],
        kept: Collection[int] = (),
    ):
        super().__init__(model)
        self._streamed, self._read, self._unread = set(streamed), read, dict.fromkeys(sorted(kept))
        self.packed: dict[int, object] = {}  # buffer -> the params whose sub-byte values it holds packed

    def generate_quantization_parameters(self, model_recipe_manager, model_qsvs=None, enable_progress_bar=None):
        if model_recipe_manager.need_calibration():
            raise RuntimeError("streamed quantization takes recipes without calibration")
        model, ops = self.float_model, []
        for sg_ind, subgraph in enumerate(model.subgraphs):
            graph_info = qtyping.GraphInfo(subgraph.tensors, model.buffers)
            io = tfl_utils.get_subgraph_input_output_operators(subgraph)
            for op_id, op in enumerate(subgraph.operators + io):
                if not isinstance(op, qtyping.IOOperator) and tfl_utils.get_op_side_effect_subgraphs(op):
                    raise NotImplementedError("streamed quantization of ops that call subgraphs")
                ops.append((sg_ind, -1 if isinstance(op, qtyping.IOOperator) else op_id, op, graph_info))
        readers: dict[int, list[int]] = {}
        for i, (_, _, op, graph_info) in enumerate(ops):
            read = {graph_info.subgraph_tensors[t].buffer for t in op.inputs if t >= 0} & self._streamed
            if len(read) > 1:
                raise NotImplementedError(f"streamed quantization of an op reading {len(read)} streamed weights")
            for b in read:
                readers.setdefault(b, []).append(i)
        done: dict[int, list] = {}
        for b, indices in readers.items():
            for i in indices:
                _, _, op, graph_info = ops[i]
                for k in [graph_info.subgraph_tensors[t].buffer for t in op.inputs if t >= 0]:
                    if self._unread.pop(k, False) is None:
                        model.buffers[k].data = self._read(k)
            standin = model.buffers[b].data
            model.buffers[b].data = self._read(b)
            shared: dict[int, object] = {}
            for i in indices:
                if i not in done:
                    done[i] = self._op_results(*ops[i], model_recipe_manager)
                self._share_copies(done[i], self._names(b), shared)
            results = [done[i] for i in indices]
            cache = self._tensor_quant_params_cache._cache  # every reader is done: b's entries only hold memory
            for key in [key for key in cache if key[0] == b]:
                del cache[key]
            if self._leaves_float(results, self._names(b)):
                log.info("buffer %d: a consumer keeps it float, its bytes stay", b)
            elif (params := self._sub_byte(results, self._names(b))) is not None:
                model.buffers[b].data = _packed(params)  # what QUANTIZE_TENSOR would pack, packed now
                self.packed[b] = params
            else:
                model.buffers[b].data = standin
        for k in self._unread:
            model.buffers[k].data = self._read(k)
        for i, op in enumerate(ops):
            self._update_model_quant_results(done.pop(i) if i in done else self._op_results(*op, model_recipe_manager))
        self._post_process_results()
        return self.model_quant_results

    def _op_results(self, sg_ind, op_id, op, graph_info, model_recipe_manager) -> list:
        """The stock loop's body for one op (no composite ops, no skipped subgraphs: checked above)."""
        if isinstance(op, qtyping.IOOperator):
            op_key = op.op_key
        else:
            op_code = self.float_model.operatorCodes[op.opcodeIndex].builtinCode
            if op_code not in tfl_utils.TFL_OP_CODE_TO_NAME:
                return self._get_params_for_no_quant_op(op_id, op, graph_info.subgraph_tensors)
            op_key = tfl_utils.TFL_OP_CODE_TO_NAME[op_code]
        op_scope = tfl_utils.get_op_scope(op, graph_info.subgraph_tensors)
        algorithm, op_config = model_recipe_manager.get_quantization_configs(op_key, op_scope)
        if algorithm == algorithm_manager.AlgorithmName.NO_QUANTIZE:
            return self._get_params_for_no_quant_op(op_id, op, graph_info.subgraph_tensors)
        materialize = algorithm_manager.get_quantization_func(algorithm, op_key, qtyping.QuantizeMode.MATERIALIZE)
        if algorithm in ROW_BLOCKED and isinstance(materialize, functools.partial) and materialize.args:
            tensor_params, *rest = materialize.args  # partial(materialize_*, get_tensor_quant_params)
            materialize = functools.partial(materialize.func, in_row_blocks(tensor_params), *rest)
        rotating = algorithm == algorithm_manager.AlgorithmName.DECOMPOSED_HADAMARD_ROTATION
        stock = hadamard_rotation.get_tensor_quant_params  # its materializers call it by its module-level name
        if rotating:
            hadamard_rotation.get_tensor_quant_params = in_row_blocks(stock)
        try:
            return materialize(
                op_info=qtyping.OpInfo(op, op_key, op_id, op_config),
                graph_info=graph_info,
                tensor_name_to_qsv={},
                tensor_quant_params_cache=self._tensor_quant_params_cache,
            )
        finally:
            hadamard_rotation.get_tensor_quant_params = stock

    def _names(self, buffer: int) -> set[str]:
        """The names of the tensors (in every subgraph) on `buffer`."""
        return {tfl_utils.get_tensor_name(t) for t in self.buffer_to_tensors[buffer]}

    @staticmethod
    def _share_copies(results: list, names: set[str], shared: dict[int, object]) -> None:
        """Consumers of the tensors `names` whose parameters equal an earlier consumer's share that object."""
        for result in results:
            if result.tensor_name not in names:
                continue
            for j, consumer in enumerate(result.consumers or []):
                params = consumer.parameters
                if params is None or getattr(params, "quantized_data", None) is None:
                    continue
                key = id(params)
                for other in shared.values():
                    if other is params or (
                        type(other) is type(params)
                        and other.num_bits == params.num_bits
                        and other.quantized_data.dtype == params.quantized_data.dtype
                        and np.array_equal(other.quantized_data, params.quantized_data)
                        and _same_except_data(other, params)
                    ):
                        result.consumers[j] = dataclasses.replace(consumer, parameters=other)
                        break
                else:
                    shared[key] = params

    @staticmethod
    def _sub_byte(results: list[list], names: set[str]):
        """The one params object every consumer of the tensors `names` quantizes them with, when it is a sub-byte
        (int4) QUANTIZE_TENSOR: its values can be packed into the buffer at once (a byte per value unpacked)."""
        consumers = [c for op in results for r in op if r.tensor_name in names for c in r.consumers or []]
        params = {id(c.parameters): c.parameters for c in consumers}
        if len(params) != 1 or any(
            c.transformations != [qtyping.QuantTransformation.QUANTIZE_TENSOR] for c in consumers
        ):
            return None
        (only,) = params.values()
        data = getattr(only, "quantized_data", None)
        return only if isinstance(only, qtyping.UniformQuantParams) and only.num_bits < 8 and data is not None else None

    @staticmethod
    def _leaves_float(results: list[list], names: set[str]) -> bool:
        """Whether some consumer of the tensors `names` leaves them unquantized (their float bytes are needed)."""
        return any(
            not consumer.transformations or consumer.transformations[0] not in _QUANTIZED_FIRST
            for op_results in results
            for result in op_results
            if result.tensor_name in names
            for consumer in result.consumers or []
        )


def _same_except_data(a, b) -> bool:
    fields = [f for f in vars(a) if f != "quantized_data"]
    return all(_equal(getattr(a, f), getattr(b, f)) for f in fields)


def _equal(x, y) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.array_equal(x, y)
    return x == y


class SavedModelConverter(TFLiteSavedModelConverterV2):
    """The TF SavedModel converter minus its Python `tf.saved_model.load`, which only fetches debug info."""

    def convert(self) -> bytes:
        graph_def, _, _ = self._load_saved_model(self.saved_model_dir, self._saved_model_tags)
        self._debug_info = None
        return self._convert_from_saved_model(graph_def)


def keep_mul_and_fc_apart(converter: TFLiteSavedModelConverterV2) -> None:
    """No folding of a MUL (a norm's gamma) into the next FULLY_CONNECTED's weights."""
    converter._experimental_disable_fuse_mul_and_fc = True
