"""Export of a kind's signatures (`Program`s, zoo/kinds/) through the decoder's path: torch.export, our
lowering, the builtins-only converter, weights baked in once and the quant recipe (zoo/export/convert.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from zoo.export.convert import export_signatures
from zoo.export.signatures import Program, export_program
from zoo.export.weights import ModuleWeights, WeightSource
from zoo.schema import QuantConfig


def export_programs(
    programs: Sequence[Program],
    path: Path,
    recipe: QuantConfig,
    components: Mapping[str, str],
    weights: WeightSource | Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """Writes the multi-signature flatbuffer atomically (`components`: the kind's quant components); returns its
    signature names. `weights`: the values of the model's meta parameters, keyed by the model's state names
    (zoo/export/weights.py); None: the model's own tensors."""
    step = programs[0].step
    source = ModuleWeights(step, weights, inner=step.model)
    exported = ((p.name, export_program(p), p.inputs, p.outputs) for p in programs)  # each dropped once lowered
    return export_signatures(step, exported, path, recipe, components, source)
