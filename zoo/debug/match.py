"""Pairing a PyTorch module path with the flatbuffer tensor that holds its output.

The lowering (zoo/export/lower.py) runs each op under the TF name scope of its innermost module path, e.g.
`decoder.model.layers.3.mlp.down_proj/MatMul`; TF makes a scope entered again unique with a suffix
(`decoder.model.layers.3_1/Add`), and the converter joins the names of fused ops with `;`. A module's output is
the output of the last op, in execution order, whose name touches the module (itself or a descendant), if all of
that name lies inside the module and its shape is the PyTorch output's (leading and inner 1s aside). A module
whose last op is fused with another module's (an add across a residual), or ends in an op of another shape, has
no node rather than a misattributed one; so is a
module whose final op is a signature output (renamed without scope), which the finder compares as that output.

A Hadamard rotation (zoo/export/rotation.py) inserts `<name>_prerotate_reshaped`, `<name>_rotated` and
`<name>_postrotate_reshaped` after a tensor: a rotated weight op's input (the rotated copy is the FC's alone) or a
rotated table's lookup (the rotated-back copy is the value). Both `<name>` and its `_postrotate_reshaped` copy are
then offered; the finder keeps the one in PyTorch's basis (the closer).
"""

from __future__ import annotations

import re

from zoo.debug.tflite import OpOutput

_UNIQUE = re.compile(r"_\d+$")
_ROTATED = re.compile(r"_(?:prerotate_reshaped|rotated|postrotate_reshaped)$")
_BACK = "_postrotate_reshaped"


def scopes(name: str, modules: set[str]) -> list[str] | None:
    """The module paths of a tensor name's `;`-joined parts ("" for a part of no module); None when no part has a
    scope (a generated name such as `StatefulPartitionedCall:0` or `Max1`)."""
    found = []
    for part in name.split(";"):
        if part.isdigit():  # the converter's suffix of a renamed fused output (`.../GatherV2;1`)
            continue
        if "/" not in part:  # an op of no module (`Add_3`) fused in: the tensor is not one module's
            found.append("")
            continue
        scope = part.split("/", 1)[0]
        found.append(scope if scope in modules else _UNIQUE.sub("", scope))
    return found if any(found) else None


def _inside(scope: str, module: str) -> bool:
    return scope == module or scope.startswith(module + ".")


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


def match(modules: dict[str, tuple[int, ...]], outputs: list[OpOutput]) -> dict[str, list[OpOutput]]:
    """Module path -> the op output holding it (with its rotated-back twin, if any), for modules (path -> PyTorch
    output shape) that have one."""
    names = set(modules)
    by_name = {out.name: out for out in outputs}
    parsed = [(out, scopes(out.name, names)) for out in outputs if not _ROTATED.search(out.name)]
    found = {}
    for module, shape in modules.items():
        want = _squeezed(shape)
        for i in range(len(parsed) - 1, -1, -1):
            out, parts = parsed[i]
            if not parts or not any(_inside(p, module) for p in parts):
                continue
            # the last op touching the module: its output only if wholly inside it, of its shape, and not renamed
            whole = all(_inside(p, module) for p in parts) and _squeezed(out.shape) == want
            if whole and not _renamed_after(parsed, i, want):
                back = by_name.get(out.name + _BACK)
                found[module] = [out] + ([back] if back is not None and _squeezed(back.shape) == want else [])
            break
    return found


def _renamed_after(parsed: list, i: int, want: tuple[int, ...]) -> bool:
    """Whether the op after the i-th is unscoped and of the same shape: the module's final op, whose output was
    renamed (`PartitionedCall_1:4`) because it is a signature output, so the i-th is not the module's output."""
    if i + 1 >= len(parsed):
        return False
    out, parts = parsed[i + 1]
    return parts is None and _squeezed(out.shape) == want
