"""Flatbuffer side of the finder: one signature run by LiteRT's interpreter with every intermediate tensor kept,
and each op's float outputs with their names, in execution order."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import InputError


@dataclass(frozen=True)
class OpOutput:
    op: int  # the op's index in its signature's subgraph (Model Explorer's node key)
    tensor: int  # the tensor's index in that subgraph
    name: str
    shape: tuple[int, ...]
    opcode: str


@dataclass(frozen=True)
class Graph:
    subgraph: int  # the signature's subgraph index in the file
    outputs: list[OpOutput]  # float32 op outputs in execution order


def op_outputs(path: Path) -> dict[str, Graph]:
    """Per signature key, its subgraph and the float32 outputs of its ops (read without unpacking weights)."""
    from zoo.export.private import schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        model = schema.Model.GetRootAs(data, 0)
        found = {}
        for i in range(model.SignatureDefsLength()):
            signature = model.SignatureDefs(i)
            sg = model.Subgraphs(signature.SubgraphIndex())
            outs = []
            for j in range(sg.OperatorsLength()):
                op = sg.Operators(j)
                code = model.OperatorCodes(op.OpcodeIndex())
                opcode = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
                for t in op.OutputsAsNumpy():
                    tensor = sg.Tensors(int(t))
                    if tensor.Type() == schema.TensorType.FLOAT32:
                        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
                        outs.append(OpOutput(j, int(t), tensor.Name().decode(), shape, opcode))
            found[signature.SignatureKey().decode()] = Graph(signature.SubgraphIndex(), outs)
    return found


def run_signature(
    path: Path, signature: str, subgraph: int, feed: dict[str, np.ndarray], tensors: list[int], threads: int
) -> tuple[dict[int, np.ndarray], dict[str, np.ndarray]]:
    """The values of `tensors` (indices in the signature's `subgraph`) after one call, and the signature's outputs.

    `experimental_preserve_all_tensors` keeps intermediates that the interpreter would otherwise reuse; the
    default XNNPACK delegate stays on, so the figures are those of the file as it runs."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # its "debugging purposes only" warning: this is debugging
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=str(path), num_threads=threads, experimental_preserve_all_tensors=True)
    signatures = interpreter.get_signature_list()
    if signature not in signatures:
        raise InputError(f"{path.name} has no signature {signature!r} (it has {', '.join(signatures)})")
    runner = interpreter.get_signature_runner(signature)
    outputs = runner(**feed)
    return {t: np.array(interpreter.get_tensor(t, subgraph)) for t in tensors}, outputs
