"""Export of a kind's signatures (`Program`s, zoo/kinds/) through the decoder's path: torch.export, our
lowering, the builtins-only converter, weights baked in once and the quant recipe (zoo/export/convert.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from zoo.config import QuantConfig
from zoo.export.convert import export_signatures
from zoo.export.signatures import Program, export_program


def export_programs(
    programs: Sequence[Program], path: Path, recipe: QuantConfig, components: Mapping[str, str]
) -> list[str]:
    """Writes the multi-signature flatbuffer atomically (`components`: the kind's quant components); returns its
    signature names."""
    exported = ((p.name, export_program(p), p.inputs, p.outputs) for p in programs)  # each dropped once lowered
    return export_signatures(programs[0].step, exported, path, recipe, components)
