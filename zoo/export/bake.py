"""Weights into a weightless flatbuffer, read only when written.

The TF converter holds about five copies of every constant it converts (SmolLM2: 2.1 GiB for 0.54 GB of weights;
a 1.1B model would not fit this machine). So signatures take the weights as extra inputs named by torch state
name, the converter sees only the graph, and `bake` then turns each weight input into a constant tensor backed by
one buffer that every signature shares. That buffer holds a stand-in of the weight's size (`Pending`: zeros of an
untouched read-only anonymous map, no memory) until the weight is read from its source (zoo/export/weights.py):
by the quantizer, one weight at a time (zoo/export/quantize.py), or by `write`, which streams the result with the
weights after the flatbuffer table, addressed by offset (so files may pass 2 GB), reading each as it writes it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.export.private import flatbuffer_utils, schema
from zoo.files import atomic_path

_NUMPY = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.BOOL: np.bool_,
    schema.TensorType.INT64: np.int64,
}
_ALIGN = 64


@dataclass
class Pending:
    """The buffers of a baked model whose weights are not read yet: buffer index -> (state name, numpy dtype,
    shape), each holding a stand-in view of `region` until `read`."""

    weights: Mapping[str, np.ndarray]
    names: dict[int, tuple[str, type, tuple[int, ...]]] = field(default_factory=dict)
    region: mmap.mmap | None = None

    def read(self, index: int) -> np.ndarray:
        """The weight of buffer `index` read from the source, as the buffer's bytes (a fresh array, or a view of an
        eager source's array)."""
        name, dtype, shape = self.names[index]
        data = np.ascontiguousarray(self.weights[name], dtype)
        if data.shape != shape:
            raise ValueError(f"weight {name}: the graph wants shape {list(shape)}, the source gave {list(data.shape)}")
        return data.reshape(-1).view(np.uint8)

    def holds_standin(self, data: object) -> bool:
        """Whether `data` (a buffer's) is a stand-in of this bake, not a weight's bytes."""
        return self.region is not None and _map_of(data) is self.region


def bake(flatbuffer: bytes | bytearray, weights: Mapping[str, np.ndarray]) -> tuple[schema.ModelT, Pending]:
    """The converted model with every signature input named in `weights` (a WeightSource: only its names are
    asked here) made a constant backed by one buffer per name, a stand-in until read (`Pending`)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    pending = Pending(weights)
    buffer_of: dict[str, int] = {}
    standins: list[tuple[int, int]] = []
    for signature in model.signatureDefs:
        graph = model.subgraphs[signature.subgraphIndex]
        kept = []
        for item in signature.inputs:
            name = item.name.decode()
            if name not in weights:
                kept.append(item)
                continue
            tensor = graph.tensors[item.tensorIndex]
            shape = tuple(int(d) for d in tensor.shape)
            if name not in buffer_of:
                model.buffers.append(schema.BufferT())
                buffer_of[name] = len(model.buffers) - 1
                dtype = _NUMPY[tensor.type]
                pending.names[buffer_of[name]] = (name, dtype, shape)
                standins.append((buffer_of[name], int(np.prod(shape)) * np.dtype(dtype).itemsize))
            elif pending.names[buffer_of[name]][2] != shape:
                raise ValueError(
                    f"weight {name}: signature {signature.signatureKey.decode()} expects shape {list(shape)}, "
                    f"another {list(pending.names[buffer_of[name]][2])}"
                )
            tensor.buffer = buffer_of[name]  # its name, from the signature input, is unique per signature
            graph.inputs = [i for i in graph.inputs if i != item.tensorIndex]
        signature.inputs = kept
    size = max((n for _, n in standins), default=0)
    if size:
        pending.region = mmap.mmap(-1, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE, mmap.MAP_PRIVATE, mmap.PROT_READ)
        for index, nbytes in standins:
            model.buffers[index].data = np.frombuffer(pending.region, np.uint8, count=nbytes)
    return model, pending


def unpack(packed: bytes | bytearray | mmap.mmap) -> schema.ModelT:
    """A flatbuffer as a model object whose buffers, inline or stored after the table, are views of `packed`."""
    model = schema.ModelT.InitFromPackedBuf(packed, 0)
    for buffer in model.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(packed, np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0
    return model


def write(model: schema.ModelT | bytes | bytearray | mmap.mmap, path: Path, pending: Pending | None = None) -> Path:
    """`model` (an object, or a flatbuffer to re-pack) as a .tflite with every non-empty buffer after the table
    (offset/size) and equal quantization parameters stored once, written atomically. A buffer still holding its
    stand-in is read from `pending` as it is written, and dropped. Buffers that view a file map (quantize's spill)
    have their pages dropped from this process once copied, so they are never all resident."""
    if not isinstance(model, schema.ModelT):
        model = unpack(model)
    data = {i: b.data for i, b in enumerate(model.buffers) if b.data is not None and len(b.data)}
    for i in data:
        model.buffers[i].data, model.buffers[i].offset, model.buffers[i].size = None, 1, 1  # placeholders, patched
    with _shared_quantization():
        table = flatbuffer_utils.convert_object_to_bytearray(model)
    packed = schema.Model.GetRootAs(table, 0)
    offset = _aligned(len(table))
    for i, array in data.items():
        flatbuffer_utils.update_packed_buffer(packed.Buffers(i), offset=offset, size=len(array))
        offset = _aligned(offset + len(array))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(table)
        for i, array in data.items():
            if pending is not None and pending.holds_standin(array):
                array = pending.read(i)
            f.seek(_aligned(f.tell()))
            f.write(memoryview(array))
            _drop_pages(array)
            del array
        f.truncate(_aligned(f.tell()))
        os.fsync(f.fileno())
    return path


def _map_of(view: object) -> object | None:
    """The mmap under a numpy view (np.frombuffer of a map), or None."""
    base = view
    while isinstance(base, np.ndarray):
        base = base.base
    mapped = getattr(base, "obj", base)  # np.frombuffer's base: a memoryview of the map
    return mapped if isinstance(mapped, mmap.mmap) else None


def _drop_pages(view: np.ndarray) -> None:
    """MADV_DONTNEED on the whole pages under `view` when it views a shared file map, which reads them back from the
    file if touched again; nothing for other arrays."""
    mapped = _map_of(view)
    if mapped is None:
        return
    start = view.ctypes.data - np.frombuffer(mapped, np.uint8, count=1).ctypes.data
    first, end = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, (start + view.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > first:
        mapped.madvise(mmap.MADV_DONTNEED, first, end - first)


@contextlib.contextmanager
def _shared_quantization() -> Iterator[None]:
    """Equal quantization parameters packed once: each signature's tensor table would otherwise hold its own copy of
    every per-channel scale and zero point (SmolLM2 int8: ~2.8 MB a signature, 2% of the file)."""
    pack, memo = schema.QuantizationParametersT.Pack, {}

    def shared(self: schema.QuantizationParametersT, builder) -> int:
        if self.details is not None:
            return pack(self, builder)
        key = (
            self.quantizedDimension,  # one builder per write: offsets from it are valid throughout
            *(None if v is None else np.asarray(v).tobytes() for v in (self.min, self.max, self.scale, self.zeroPoint)),
        )
        if key not in memo:
            memo[key] = pack(self, builder)
        return memo[key]

    schema.QuantizationParametersT.Pack = shared
    try:
        yield
    finally:
        schema.QuantizationParametersT.Pack = pack


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN
