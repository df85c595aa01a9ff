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
  constructor sets (which would parse a serialized copy: the weights twice in memory).
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

import importlib.metadata

import numpy as np

from zoo.errors import VersionError

__all__ = [
    "PINS",
    "InMemoryQuantizer",
    "SavedModelConverter",
    "check_versions",
    "dynamic_update_slice",
    "flatbuffer_utils",
    "hadamard_matrix",
    "keep_mul_and_fc_apart",
    "schema",
    "tfl_utils",
    "transformation_utils",
]
PINS = {"tensorflow-cpu": "2.21.0", "ai-edge-litert": "2.3.0", "ai-edge-quantizer": "0.10.0"}


def check_versions() -> None:
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


check_versions()  # before the imports below, which a moved private module would fail with a less useful error

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402
from ai_edge_quantizer import qtyping, quantizer, recipe_manager  # noqa: E402
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
    """ai-edge-quantizer over a model object already in memory (baked weights are views of the torch tensors),
    where its own constructor would parse a serialized copy. Sets what that constructor sets."""

    def __init__(self, model: qtyping.ModelT):  # pylint: disable=super-init-not-called
        self._model_name = None
        self._float_model_buffer = memoryview(b"")  # read only by calibration and progress reports: neither runs
        self.previous_quantized_model_buffer = None
        self._float_model = model
        self._recipe_manager = recipe_manager.RecipeManager()
        self._result = quantizer.QuantizationResult([{}], None)
        self._quantize_called = False


class SavedModelConverter(TFLiteSavedModelConverterV2):
    """The TF SavedModel converter minus its Python `tf.saved_model.load`, which only fetches debug info."""

    def convert(self) -> bytes:
        graph_def, _, _ = self._load_saved_model(self.saved_model_dir, self._saved_model_tags)
        self._debug_info = None
        return self._convert_from_saved_model(graph_def)


def keep_mul_and_fc_apart(converter: TFLiteSavedModelConverterV2) -> None:
    """No folding of a MUL (a norm's gamma) into the next FULLY_CONNECTED's weights."""
    converter._experimental_disable_fuse_mul_and_fc = True
