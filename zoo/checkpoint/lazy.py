"""Checkpoint tensors read one at a time: a name's shape and dtype are known without reading it, and its values are
read (and widened to float32) only when asked for, so no stage needs the whole checkpoint in memory.

Safetensors files are checked by safetensors once, then each tensor is read by plain file reads (no memory map
whose pages would stay resident beside the converted copy). A GGUF file's tensors are dequantized one at a time
(into a float32 snapshot, zoo/checkpoint/sources.py).
pytorch_model.bin, whose reader only gives everything at once, is held as read: old and small checkpoints only.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.errors import CheckpointError


@dataclass(frozen=True)
class Meta:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point


class LazyTensors(Mapping[str, torch.Tensor]):
    """HF-named checkpoint tensors: `meta[name]` without reading, `self[name]` reads it (float32 for float tensors;
    `get(name, dtype)` in another float dtype), a NaN or infinity refused naming the tensor the first time it is
    read. Every read is fresh: holding the result is the caller's choice."""

    def __init__(self, meta: dict[str, Meta]):
        self.meta = meta
        self.finite: set[str] = set()  # names already checked

    def __iter__(self) -> Iterator[str]:
        return iter(self.meta)

    def __len__(self) -> int:
        return len(self.meta)

    def __contains__(self, name: object) -> bool:
        return name in self.meta

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.get(name)

    def get(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if name not in self.meta:
            raise KeyError(name)
        tensor = self.read(name, dtype if self.meta[name].is_float else None)
        if tensor.is_floating_point() and name not in self.finite:
            rows = tensor.reshape(tensor.shape[0] if tensor.ndim else 1, -1)
            step = max(1, (1 << 24) // max(1, rows.shape[1]))  # a mask of 16M at a time, not of the whole table
            if not all(bool(torch.isfinite(rows[i : i + step]).all()) for i in range(0, rows.shape[0], step)):
                raise CheckpointError(
                    f"checkpoint tensor {name} has values that are not finite (NaN or inf): the checkpoint is "
                    "corrupt; copy or download it again"
                )
            self.finite.add(name)
        return tensor

    def read(self, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        """The tensor as stored, converted to `dtype` (None: as stored), in memory of its own."""
        raise NotImplementedError


class InMemory(LazyTensors):
    """Tensors a reader already gave whole (pytorch_model.bin)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__({k: Meta(tuple(v.shape), v.dtype) for k, v in tensors.items()})
        self.tensors = tensors

    def read(self, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        tensor = self.tensors[name]
        return tensor.to(dtype or tensor.dtype, copy=True)


class Safetensors(LazyTensors):
    """One or more .safetensors files (a sharded index's shards), read tensor by tensor.

    safetensors checks each file; the bytes of a tensor are then read with plain file reads, 16M elements at a
    time, into the tensor returned (converted on the way): a memory map would add the stored tensor's pages to the
    process on top of the converted copy (Gemma's bf16 table: 1 GB more at the peak of a 2 GB float32 read)."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        meta, self.where = {}, {}
        for path in files:
            # safe_open checks the whole file; the format's header is then an 8-byte length and JSON of every tensor
            with unreadable(path, "safetensors"), safe_open(path, "pt"), path.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
            for name, entry in header.items():
                if name != "__metadata__":
                    meta[name] = Meta(tuple(entry["shape"]), _DTYPES.get(entry["dtype"], torch.uint8))
                    self.where[name] = (path, 8 + size + entry["data_offsets"][0])
        super().__init__(meta)

    def read(self, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        path, offset = self.where[name]
        stored = self.meta[name].dtype
        out = torch.empty(self.meta[name].shape, dtype=dtype or stored)
        flat, step = out.view(-1), 1 << 24
        with unreadable(path, f"safetensors (tensor {name})"), path.open("rb") as f:
            f.seek(offset)
            if out.dtype == stored:
                _read_into(f, flat, path, name)
            else:
                buffer = torch.empty(min(step, flat.numel()), dtype=stored)
                for start in range(0, flat.numel(), step):
                    part = buffer[: min(step, flat.numel() - start)]
                    _read_into(f, part, path, name)
                    flat[start : start + part.numel()] = part
        return out


class GGUF(LazyTensors):
    """A .gguf file read tensor by tensor: gguf's reader maps the file, and a tensor asked for is dequantized by gguf
    and put in transformers' layout by transformers' processor for the architecture (llama.cpp's q/k row
    permutation undone): what transformers' `load_gguf_checkpoint` does to every tensor at once, one at a time.
    `skeleton` (the transformers model on the meta device) names the tensors as transformers does."""

    # Processors that merge several GGUF tensors into one (mixture-of-experts) need them all at once.
    MERGED = ("Qwen2MoeTensorProcessor", "GptOssTensorProcessor", "MiniMaxM2TensorProcessor")

    def __init__(self, path: Path, config: dict, skeleton: torch.nn.Module):
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
            read_field,
        )

        with unreadable(path, "a GGUF file of an architecture transformers reads"):
            reader = GGUFReader(path)
            architecture = read_field(reader, "general.architecture")[0]
            self.processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config)
            if type(self.processor).__name__ in self.MERGED:
                raise CheckpointError(
                    f"{path}: GGUF of architecture {architecture} (mixture of experts) merges tensors on reading, "
                    "which zoo does not do one tensor at a time: convert it to safetensors"
                )
            names = get_gguf_hf_weights_map(skeleton, self.processor)
        self.path, self.tensors = path, {names[t.name]: t for t in reader.tensors if t.name in names}
        super().__init__(
            {k: Meta(tuple(int(d) for d in reversed(t.shape)), torch.float32) for k, t in self.tensors.items()}
        )

    def read(self, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        from gguf import dequantize

        tensor = self.tensors[name]
        with unreadable(self.path, f"GGUF (tensor {tensor.name})"):
            weights = self.processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name)
        return (
            torch.from_numpy(np.array(weights.weights, dtype=np.float32))
            .reshape(self.meta[name].shape)
            .to(dtype or torch.float32)
        )


def _read_into(f, tensor: torch.Tensor, path: Path, name: str) -> None:
    """Fill the contiguous `tensor` with the file's next bytes (a read returns at most ~2 GB: loop)."""
    view, done = memoryview(tensor.view(torch.uint8).numpy()), 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise CheckpointError(f"{path}: ends inside tensor {name}: the file is truncated; copy it again")
        done += got


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@contextmanager
def unreadable(path: Path, what: str) -> Iterator[None]:
    """Any failure to parse `path` (truncated, corrupt, wrong format) as one CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as err:
        text = str(err).strip()
        first = (text.splitlines()[0] if text else type(err).__name__)[:200]
        raise CheckpointError(
            f"{path}: not readable as {what} ({first}): the file is truncated or corrupt; copy or download it again"
        ) from None


# --- random weights, one tensor at a time ----------------------------------------------------------------------------


def random_tensor(
    name: str, shape: tuple[int, ...], seed: int, std: float, base: torch.Tensor | None = None
) -> torch.Tensor:
    """Seeded by the run's seed and the tensor's name, so any reader gets the same values in any order: matrices and
    tables N(0, std) as transformers initialises them; 1-D tensors (norm gammas, biases) `base`, transformers' own
    constant init of them (ones, or zeros for Gemma's 1 + w norms), plus N(0, 0.1) noise so that a wrong gamma or
    bias path shows. Rounded to bfloat16, what HF checkpoints ship; drawn in blocks of rows so a 256k-row table never
    exists in float32 whole."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = torch.empty(shape, dtype=torch.bfloat16)
    flat = out.view(shape[0], -1) if len(shape) >= 2 else out.view(1, -1)
    rows = max(1, (1 << 24) // flat.shape[1])
    for start in range(0, flat.shape[0], rows):
        block = rng.standard_normal((min(rows, flat.shape[0] - start), flat.shape[1]), dtype=np.float32)
        if len(shape) >= 2:
            block *= std
        else:
            block *= 0.1
            block += base.float().numpy().reshape(block.shape)
        flat[start : start + len(block)] = torch.from_numpy(block)
    return out


def write_random(folder: Path, names: Mapping[str, tuple[int, ...]], skeleton, seed: int) -> None:
    """A HF snapshot of random weights for `skeleton` (the transformers model on the meta device) in `folder`."""
    std = float(getattr(skeleton.config, "initializer_range", 0.02) or 0.02)

    def make(n: str) -> torch.Tensor:
        return random_tensor(n, names[n], seed, std, initial(skeleton, n) if len(names[n]) < 2 else None)

    write_snapshot(folder, list(names), make, skeleton.config)


def write_snapshot(folder: Path, names: list[str], make: Callable[[str], torch.Tensor], config) -> None:
    """A HF snapshot in `folder`: config.json and safetensors shards of about a layer each (with their index), each
    shard's tensors made (`make(name)`) and written before the next: never the whole model at once."""
    from safetensors.torch import save_file

    shards: dict[str, list[str]] = {}
    for name in names:
        shards.setdefault(_shard_key(name), []).append(name)
    weight_map = {}
    for i, (_, members) in enumerate(sorted(shards.items())):
        shard = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        try:
            save_file({n: make(n) for n in members}, folder / shard)
        except Exception as err:  # safetensors gives the OS's refusal (a full disk) as text: make it an OSError again
            if code := re.search(r"os error (\d+)", str(err)):
                raise OSError(int(code[1]), os.strerror(int(code[1]))) from None
            raise
        weight_map.update(dict.fromkeys(members, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config.save_pretrained(folder)


def initial(skeleton, name: str) -> torch.Tensor:
    """transformers' own init of a small (1-D) parameter: its module copied off the meta device and initialised."""
    import copy

    owner, _, leaf = name.rpartition(".")
    module = copy.deepcopy(skeleton.get_submodule(owner)).to_empty(device="cpu")
    with torch.no_grad():
        skeleton._init_weights(module)
    return getattr(module, leaf).detach()


def _shard_key(name: str) -> str:
    """Tensors of one layer share a shard (`...layers.3.` -> that prefix); the rest go to one shard."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ""
