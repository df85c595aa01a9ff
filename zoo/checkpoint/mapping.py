"""The mapping-rule engine: fills every parameter of our module from checkpoint tensors, strictly.

Rules are YAML data (`MappingConfig`); `{layer}` expands over the layers. A parameter named like a checkpoint
tensor takes it unchanged when `identity` is on. Every checkpoint tensor must be used or match a `drop` pattern,
every parameter must be filled with the right shape; otherwise one `MappingError` lists all offenders.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from zoo.checkpoint.lazy import InMemory, LazyTensors, Meta
from zoo.errors import MappingError
from zoo.schema import MappingConfig, MappingRule


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


def source_problem(rule: MappingRule, meta: Mapping[str, Meta]) -> str | None:
    """Why the rule's checkpoint tensors cannot make a float parameter: a non-float dtype, or fused sources whose
    shapes do not stack (a q_proj of the wrong width shows only here)."""
    sources = {n: meta[n] for n in source_names(rule)}
    for n, m in sources.items():
        if not m.is_float:
            return f"checkpoint tensor {n} is {str(m.dtype).removeprefix('torch.')}, not a float tensor"
    if rule.fuse and len({m.shape[1:] for m in sources.values()}) > 1:
        shapes = ", ".join(f"{n} {m.shape}" for n, m in sources.items())
        return f"fused sources do not stack ({shapes})"
    return None


def _shape(name: str, rules: dict[str, MappingRule], meta: Mapping[str, Meta]) -> tuple[int, ...]:
    """The shape parameter `name` gets by its rule, from the sources' shapes alone."""
    rule = rules[name]
    if rule.tie is not None:
        return _shape(rule.tie, rules, meta)
    if rule.hf is None and not rule.fuse:
        return tuple(meta[name].shape)
    if rule.fuse:
        first = meta[rule.fuse[0]].shape
        return (sum(meta[n].shape[0] for n in rule.fuse), *first[1:])
    shape = meta[rule.hf].shape
    if rule.transpose:
        shape = shape[::-1]
    if rule.split:
        shape = (int(rule.split[rule.split_index]), *shape[1:])
    return tuple(shape)


def apply_rule(rule: MappingRule, tensors: LazyTensors, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Our parameter, read now from its checkpoint tensors."""
    if rule.fuse:
        return torch.cat([tensors.get(n, dtype) for n in rule.fuse], dim=0)
    tensor = tensors.get(rule.hf, dtype)
    if rule.transpose:
        tensor = tensor.t().contiguous()
    if rule.split:
        tensor = torch.split(tensor, [int(s) for s in rule.split], dim=0)[rule.split_index].clone()
    return tensor


class Weights(Mapping[str, torch.Tensor]):
    """Our model's parameters by state name, each read from the checkpoint by its rule when asked for (float32, a
    fresh tensor each time): what the gate, the export and the check stream one layer at a time."""

    def __init__(self, rules: dict[str, MappingRule], tensors: LazyTensors, shapes: dict[str, tuple[int, ...]]):
        self.rules, self.tensors, self.shapes = rules, tensors, shapes

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.get(name)

    def get(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        rule = self.rules[name]
        if rule.tie is not None:
            return self.get(rule.tie, dtype)
        if rule.hf is None and not rule.fuse:  # identity: named like the checkpoint tensor
            return self.tensors.get(name, dtype)
        return apply_rule(rule, self.tensors, dtype)

    def arrays(self) -> Arrays:
        """The same weights as float32 numpy arrays (what the export reads, zoo/export/weights.py)."""
        return Arrays(self)

    def nbytes(self) -> int:
        """float32 bytes of the distinct parameters (a tied one counted once)."""
        return sum(4 * int(np.prod(self.shapes[n])) for n, r in self.rules.items() if r.tie is None)


class Arrays(Mapping[str, np.ndarray]):
    """A Weights read as float32 numpy arrays, each a fresh one."""

    def __init__(self, weights: Weights):
        self.weights = weights

    def __iter__(self):
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)

    def __contains__(self, name: object) -> bool:
        return name in self.weights.rules

    def __getitem__(self, name: str) -> np.ndarray:
        return self.weights.get(name).numpy()


def plan(
    meta: Mapping[str, Meta], shapes: dict[str, tuple[int, ...]], mapping: MappingConfig, num_layers: int
) -> dict[str, MappingRule]:
    """The rule of each parameter of the given shapes, checked on the checkpoint's names, shapes and dtypes alone
    (nothing read): a MappingError lists every miss."""
    rules = expand(mapping.rules, num_layers)
    out: dict[str, MappingRule] = {}
    used: set[str] = set()
    missing, bad_shapes = [], []
    for name in shapes:
        rule = rules.get(name)
        if rule is not None and rule.tie is None:
            absent = [n for n in source_names(rule) if n not in meta]
            if absent:
                missing.append(f"{name} (rule needs {', '.join(absent)})")
                continue
            used.update(source_names(rule))
            problem = source_problem(rule, meta)
            if problem:
                bad_shapes.append(f"{name}: {problem}")
                continue
            out[name] = rule
        elif rule is None and mapping.identity and name in meta:
            used.add(name)
            if not meta[name].is_float:
                bad_shapes.append(
                    f"{name}: checkpoint tensor is {str(meta[name].dtype).removeprefix('torch.')}, not a float tensor"
                )
                continue
            out[name] = MappingRule(ours=name)
        elif rule is None:
            missing.append(name)
    for name, rule in rules.items():
        if rule.tie is not None and name in shapes:
            if rule.tie in out:
                out[name] = rule
            else:
                missing.append(f"{name} (tied to unfilled {rule.tie})")
    for name in out:
        got = _shape(name, out, meta)
        if got != tuple(shapes[name]):
            bad_shapes.append(f"{name}: checkpoint {tuple(got)} vs model {tuple(shapes[name])}")
    unused = [n for n in meta if n not in used and not any(fnmatch.fnmatch(n, p) for p in mapping.drop)]
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


def weights_for(
    model: nn.Module, tensors: LazyTensors | dict[str, torch.Tensor], mapping: MappingConfig, num_layers: int
) -> Weights:
    """The module's parameters as Weights over the checkpoint (strict both ways, checked before anything is read)."""
    tensors = tensors if isinstance(tensors, LazyTensors) else InMemory(tensors)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    return Weights(plan(tensors.meta, shapes, mapping, num_layers), tensors, shapes)


def materialize(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """`model` with every parameter read into memory (tied ones sharing one tensor): for small models and the stages
    that need the whole module at once."""
    state, read = {}, {}
    for name in model.state_dict():
        rule = weights.rules[name] if isinstance(weights, Weights) else None
        key = rule.tie if rule is not None and rule.tie else name
        if key not in read:
            read[key] = weights[key]
        state[name] = read[key]
    model.load_state_dict(state, strict=True, assign=True)
    return model.requires_grad_(False)  # inference only: no stage builds an autograd graph


def load(
    model: nn.Module, tensors: LazyTensors | dict[str, torch.Tensor], mapping: MappingConfig, num_layers: int
) -> nn.Module:
    """Fill the module's parameters in place from the mapped checkpoint (strict both ways)."""
    return materialize(model, weights_for(model, tensors, mapping, num_layers))
