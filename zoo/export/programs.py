"""The one export of every kind: its signatures (`Program`s, zoo/kinds/<kind>/programs.py) over the model with
the recipe's zero points, through torch.export, our lowering, the builtins-only converter, weights baked in once and
the quant recipe (zoo/export/convert.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from zoo.export.asymmetric import with_zero_points
from zoo.export.convert import export_signatures
from zoo.export.quantize import zero_point_blocks
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


def export_model(
    model: nn.Module,
    programs_of: Callable[[nn.Module], Sequence[Program]],
    path: Path,
    recipe: QuantConfig,
    components: Mapping[str, str],
    weights: WeightSource | Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """`model`'s signatures (`programs_of` the model to export: the kind's programs) as one flatbuffer: the Linear
    modules the recipe gives int4 zero points made asymmetric first (zoo/export/asymmetric.py), then
    `export_programs`. `weights`: the values of `model`'s meta parameters by state name (zoo/export/weights.py),
    each read once (twice for zero points with `outliers`); None: the model's own tensors."""
    source = ModuleWeights(model, weights)
    model, source = with_zero_points(model, zero_point_blocks(model, recipe, components), source)
    return export_programs(programs_of(model), path, recipe, components, source)
