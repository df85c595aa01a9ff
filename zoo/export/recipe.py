"""What a quant recipe selects, checked before any work: its regexes are searched in the names of our model's
weights, so a component or `hadamard` pattern that selects no weight is a config error, not a silent no-op.

Weight ops keep our module paths as TF name scopes and our parameter names as constant names
(zoo/export/lower.py), so the module paths of the model built on the meta device are the names the quantizer
will search (zoo/export/quantize.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Optional

from torch import nn

from zoo.errors import ConfigError
from zoo.schema import ComponentModes, QuantConfig, QuantMode

BLOCKWISE = (QuantMode.int4_block32, QuantMode.int4_block64, QuantMode.int4_block128)
ZERO_POINT_MODES = (QuantMode.none, QuantMode.fp16, QuantMode.int8_weight_only)


def component_of(name: str, components: Mapping[str, str]) -> Optional[str]:
    """The first of a kind's `components` (component -> regex, zoo/kinds/) whose pattern is found in `name`."""
    return next((c for c, pattern in components.items() if re.search(pattern, name)), None)


def weight_names(model: nn.Module) -> list[str]:
    """Module paths of the model's weight ops (matrices and tables); a tied lm_head (`lm_head` None, the table
    reused by F.linear) is still an op the exporter scopes as `lm_head`."""
    names = [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Embedding))]
    return names + (["lm_head"] if hasattr(model, "lm_head") and model.lm_head is None else [])


def validate_recipe(recipe: QuantConfig, components: Mapping[str, str], model: nn.Module, model_name: str) -> None:
    """Raises ConfigError for a malformed recipe or a pattern that selects no weight of `model` (`components`: its
    kind's)."""
    where = f"conf/quant/{recipe.name}.yaml"
    if recipe.fallback in BLOCKWISE:
        raise ConfigError(f"{where}: quant.fallback must not be blockwise, got {recipe.fallback.value}")
    if recipe.zero_points not in ZERO_POINT_MODES:
        raise ConfigError(
            f"{where}: quant.zero_points must be one of {', '.join(m.value for m in ZERO_POINT_MODES)} "
            f"(the zero-point matrices' precision), got {recipe.zero_points.value}"
        )
    if recipe.hadamard_max < 0 or recipe.hadamard_max & (recipe.hadamard_max - 1):
        raise ConfigError(
            f"{where}: quant.hadamard_max must be a power of two (or 0: no cap), got {recipe.hadamard_max}"
        )
    names = weight_names(model)
    example = f"its weights are named like {', '.join(names[:4])}"
    for pattern in recipe.hadamard:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"{where}: quant.hadamard pattern {pattern!r} is not a regex ({err})") from None
    for override in recipe.overrides:
        try:
            re.compile(override.pattern)
        except re.error as err:
            raise ConfigError(f"{where}: quant.overrides pattern {override.pattern!r} is not a regex ({err})") from None
        if not any(re.search(override.pattern, n) for n in names):
            raise ConfigError(
                f"{where}: quant.overrides pattern {override.pattern!r} matches no weight of {model_name} "
                f"({example}): fix the pattern or drop it"
            )
    # A recipe names the matrices of several families (gate_up_proj, up_proj ...): each pattern need not match every
    # model, but a list that rotates nothing of this one is a mistake (a typo, or another kind's names).
    if recipe.hadamard and not any(re.search(p, n) for p in recipe.hadamard for n in names):
        raise ConfigError(
            f"{where}: quant.hadamard patterns {recipe.hadamard} match no weight of {model_name} "
            f"({example}): fix the patterns or drop them (quant.hadamard=[] rotates nothing)"
        )
    for component in (f.name for f in fields(ComponentModes)):
        if getattr(recipe.components, component) is None:
            continue
        if not any(component_of(n, components) == component for n in names):
            pattern = f"pattern {components[component]!r}" if component in components else "its kind names none"
            raise ConfigError(
                f"{where}: quant.components.{component} selects no weight of {model_name} ({pattern}; "
                f"{example}): remove it from the recipe"
            )
