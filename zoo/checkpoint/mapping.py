"""The mapping-rule engine: fills every parameter of our module from checkpoint tensors, strictly.

Rules are YAML data (`MappingConfig`); `{layer}` expands over the layers. A parameter named like a checkpoint
tensor takes it unchanged when `identity` is on. Every checkpoint tensor must be used or match a `drop` pattern,
every parameter must be filled with the right shape; otherwise one `MappingError` lists all offenders.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict

import torch
from torch import nn

from zoo.config import MappingConfig, MappingRule
from zoo.errors import MappingError


def expand(rules: list[MappingRule], num_layers: int) -> dict[str, MappingRule]:
    """One concrete rule per parameter name, `{layer}` substituted in every field."""
    out = {}
    for rule in rules:
        layers = range(num_layers) if "{layer}" in rule.ours else [None]
        for layer in layers:
            sub = (lambda s, n=layer: s.replace("{layer}", str(n))) if layer is not None else (lambda s: s)
            out[sub(rule.ours)] = MappingRule(
                ours=sub(rule.ours),
                hf=sub(rule.hf) if rule.hf else None,
                fuse=[sub(n) for n in rule.fuse] if rule.fuse else None,
                tie=sub(rule.tie) if rule.tie else None,
                transpose=rule.transpose,
                split=rule.split,
                split_index=rule.split_index,
            )
    return out


def source_names(rule: MappingRule) -> list[str]:
    return rule.fuse or ([rule.hf] if rule.hf else [])


def source_problem(rule: MappingRule, tensors: dict[str, torch.Tensor]) -> str | None:
    """Why the rule's checkpoint tensors cannot make a float parameter: a non-float dtype, or fused sources whose
    shapes do not stack (a q_proj of the wrong width shows only here)."""
    sources = {n: tensors[n] for n in source_names(rule)}
    for n, t in sources.items():
        if not t.is_floating_point():
            return f"checkpoint tensor {n} is {str(t.dtype).removeprefix('torch.')}, not a float tensor"
    if rule.fuse and len({tuple(t.shape[1:]) for t in sources.values()}) > 1:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in sources.items())
        return f"fused sources do not stack ({shapes})"
    return None


def apply_rule(rule: MappingRule, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our parameter from its checkpoint tensors. A fused one is a new tensor, and its sources in `tensors` become
    views of it (same values): the checkpoint and the model then share one copy, as unfused parameters do."""
    if rule.fuse:
        fused = torch.cat([tensors[n] for n in rule.fuse], dim=0)
        parts = torch.split(fused, [tensors[n].shape[0] for n in rule.fuse], dim=0)
        tensors.update(zip(rule.fuse, parts))
        return fused
    tensor = tensors[rule.hf]
    if rule.transpose:
        tensor = tensor.t().contiguous()
    if rule.split:
        tensor = torch.split(tensor, [int(s) for s in rule.split], dim=0)[rule.split_index]
    return tensor


def map_tensors(
    tensors: dict[str, torch.Tensor], shapes: dict[str, torch.Size], mapping: MappingConfig, num_layers: int
) -> dict[str, torch.Tensor]:
    """Our state dict (name -> tensor) for parameters of the given shapes, or a MappingError listing every miss."""
    rules = expand(mapping.rules, num_layers)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, bad_shapes = [], []
    for name in shapes:
        rule = rules.get(name)
        if rule is not None and rule.tie is None:
            absent = [n for n in source_names(rule) if n not in tensors]
            if absent:
                missing.append(f"{name} (rule needs {', '.join(absent)})")
                continue
            problem = source_problem(rule, tensors)
            if problem:
                bad_shapes.append(f"{name}: {problem}")
                used.update(source_names(rule))
                continue
            out[name] = apply_rule(rule, tensors)
            used.update(source_names(rule))
        elif rule is None and mapping.identity and name in tensors:
            used.add(name)
            if not tensors[name].is_floating_point():
                bad_shapes.append(
                    f"{name}: checkpoint tensor is {str(tensors[name].dtype).removeprefix('torch.')}, "
                    "not a float tensor"
                )
                continue
            out[name] = tensors[name]
        elif rule is None:
            missing.append(name)
    for name, rule in rules.items():
        if rule.tie is not None and name in shapes:
            if rule.tie in out:
                out[name] = out[rule.tie]
            else:
                missing.append(f"{name} (tied to unfilled {rule.tie})")
    for name, tensor in out.items():
        if tuple(tensor.shape) != tuple(shapes[name]):
            bad_shapes.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(shapes[name])}")
    unused = [n for n in tensors if n not in used and not any(fnmatch.fnmatch(n, p) for p in mapping.drop)]
    if missing or unused or bad_shapes:
        parts = []
        if missing:
            parts.append(f"parameters with no checkpoint tensor: {fold(missing)}")
        if unused:
            parts.append(f"checkpoint tensors not used (map them or add to mapping.drop): {fold(unused)}")
        if bad_shapes:
            parts.append(f"shape or dtype mismatches: {fold(bad_shapes)}")
        raise MappingError("strict load failed; " + "; ".join(parts))
    return out


def fold(names: list[str]) -> str:
    """Names that differ only by layer number, shown once as `layers.{0-29}` to keep the error short."""
    groups: dict[str, list[int]] = defaultdict(list)
    for name in names:
        match = re.search(r"\.(\d+)\.", name)
        key = name[: match.start(1)] + "{}" + name[match.end(1) :] if match else name
        groups[key].append(int(match.group(1)) if match else -1)
    shown = []
    for key, layers in groups.items():
        if layers == [-1]:
            shown.append(key)
        else:
            nums = sorted(layers)
            span = (
                str(nums[0])
                if len(nums) == 1
                else f"{nums[0]}-{nums[-1]}"
                if nums == list(range(nums[0], nums[-1] + 1))
                else ",".join(map(str, nums))
            )
            shown.append(key.replace("{}", "{" + span + "}" if len(nums) > 1 else span))
    return ", ".join(shown)


def load(model: nn.Module, tensors: dict[str, torch.Tensor], mapping: MappingConfig, num_layers: int) -> None:
    """Fill the module's parameters in place from the mapped checkpoint (strict both ways)."""
    shapes = {name: p.shape for name, p in model.state_dict().items()}
    state = map_tensors(tensors, shapes, mapping, num_layers)
    model.load_state_dict(state, strict=True, assign=True)
