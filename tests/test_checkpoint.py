"""Checkpoint sources and the strict mapping engine: every mismatch is an error that names it."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from zoo import golden, pipeline
from zoo.checkpoint import CheckpointError, MappingError, load, resolve, validate_checkpoint
from zoo.checkpoint.lazy import GGUF, InMemory, Meta, Safetensors
from zoo.checkpoint.mapping import Weights, plan
from zoo.kinds import kind_of
from zoo.schema import MappingConfig, MappingRule

from conftest import compose_cfg


@pytest.fixture(scope="module")
def small():
    """The small tinyllama variant and its transformers-initialised random checkpoint."""
    cfg = compose_cfg(["model=tinyllama", "variant=small"])
    return cfg, resolve("random", cfg.model.reference, 0)


def model_and_shapes(cfg):
    from zoo.kinds import kind_of

    model = kind_of(cfg).build(cfg.model.arch, cfg.export)
    return model, {k: v.shape for k, v in model.state_dict().items()}


STRICT_CASES = {
    "missing": (
        lambda t: {k: v for k, v in t.items() if k != "model.layers.1.self_attn.k_proj.weight"},
        r"parameters with no checkpoint tensor: model.layers.1.self_attn.qkv_proj.weight "
        r"\(rule needs model.layers.1.self_attn.k_proj.weight\)",
    ),
    "extra": (
        lambda t: {**t, "model.layers.0.mystery.weight": torch.zeros(3)},
        r"checkpoint tensors not used .*: model.layers.0.mystery.weight",
    ),
    "shape": (
        lambda t: {**t, "model.norm.weight": torch.ones(65)},
        r"shape or dtype mismatches: model.norm.weight: checkpoint \(65,\) vs model \(64,\)",
    ),
}


@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_strict_load_names_every_mismatch(small, case):
    """A missing tensor, an extra tensor and a wrong shape each fail the load with the offending names."""
    cfg, ckpt = small
    mutate, pattern = STRICT_CASES[case]
    model, _ = model_and_shapes(cfg)
    with pytest.raises(MappingError, match=pattern):
        load(model, mutate(ckpt.tensors), cfg.model.mapping, cfg.model.arch.num_layers)


def test_unmatched_names_fold_over_layers(small):
    cfg, ckpt = small
    tensors = {k: v for k, v in ckpt.tensors.items() if "input_layernorm" not in k}
    model, _ = model_and_shapes(cfg)
    with pytest.raises(MappingError, match=r"model.layers.\{0-1\}.input_layernorm.weight"):
        load(model, tensors, cfg.model.mapping, cfg.model.arch.num_layers)


def test_named_ops_fuse_split_transpose_tie():
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(1, 3), "fused": torch.arange(12.0).view(4, 3)}
    mapping = MappingConfig(
        identity=False,
        rules=[
            MappingRule(ours="ab", fuse=["a", "b"]),
            MappingRule(ours="at", hf="a", transpose=True),
            MappingRule(ours="second", hf="fused", split=["1", "3"], split_index=1),
            MappingRule(ours="tied", tie="ab"),
        ],
    )
    shapes = {"ab": (3, 3), "at": (3, 2), "second": (3, 3), "tied": (3, 3)}
    source = InMemory(tensors)
    out = Weights(plan(source.meta, shapes, mapping, num_layers=1), source, shapes)
    assert torch.equal(out["ab"], torch.cat([tensors["a"], tensors["b"]]))
    assert torch.equal(out["at"], tensors["a"].t())
    assert torch.equal(out["second"], tensors["fused"][1:])
    assert torch.equal(out["tied"], out["ab"])


def test_a_parameter_reads_only_its_own_sources():
    """Weights are read on demand: planning reads nothing, a fused parameter reads its sources once each, and a
    checkpoint tensor of another parameter is never read for it."""
    reads = []

    class Counting(InMemory):
        def read(self, name, dtype):
            reads.append(name)
            return super().read(name, dtype)

    source = Counting({"a": torch.arange(6.0).view(2, 3), "b": torch.ones(1, 3), "c": torch.zeros(2, 2)})
    mapping = MappingConfig(identity=True, rules=[MappingRule(ours="ab", fuse=["a", "b"])])
    weights = Weights(plan(source.meta, {"ab": (3, 3), "c": (2, 2)}, mapping, num_layers=1), source, {})
    assert reads == []
    weights["ab"]
    assert reads == ["a", "b"]


def test_drop_patterns_allow_unused(small):
    cfg, ckpt = small
    tensors = {**ckpt.tensors, "model.rotary_emb.inv_freq": torch.zeros(8)}
    model, _ = model_and_shapes(cfg)
    load(model, tensors, cfg.model.mapping, cfg.model.arch.num_layers)


def test_arch_mismatch_with_checkpoint_config_names_both_values(small):
    _, ckpt = small
    cfg = compose_cfg(["model=tinyllama", "variant=small", "model.arch.norm.eps=1e-6"])
    with pytest.raises(CheckpointError, match=r"rms_norm_eps: the entry says 1e-06 but the checkpoint .* has 1e-05"):
        validate_checkpoint(cfg.model.reference, ckpt)


def save_hf(small, folder, **kwargs):
    """The small variant saved by transformers' own save_pretrained."""
    cfg, ckpt = small
    hf = golden.reference_model(cfg.model.reference, ckpt)
    hf.save_pretrained(folder, **kwargs)
    return cfg


@pytest.mark.parametrize("kwargs", [{}, {"max_shard_size": "100KB"}], ids=["single", "sharded"])
def test_hf_folder_safetensors_passes_gate(small, tmp_path, kwargs):
    cfg = save_hf(small, tmp_path, **kwargs)
    assert (tmp_path / ("model.safetensors.index.json" if kwargs else "model.safetensors")).exists()
    cfg.model.checkpoint = str(tmp_path)
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    assert pipeline.verify(cfg, loaded).result.passed


def test_pytorch_bin_loads_weights_only(small, tmp_path):
    cfg, ckpt = small
    save_hf(small, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(dict(ckpt.tensors), tmp_path / "pytorch_model.bin")
    loaded = resolve(str(tmp_path), cfg.model.reference, 0)
    assert set(loaded.tensors) == set(ckpt.tensors)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pytorch_bin_refuses_arbitrary_objects(small, tmp_path):
    cfg, _ = small
    save_hf(small, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        resolve(str(tmp_path), cfg.model.reference, 0)


def test_bad_sources_are_clear(small, tmp_path):
    cfg, _ = small
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve(str(tmp_path / "nope"), cfg.model.reference, 0)
    with pytest.raises(CheckpointError, match="package 'not_a_pkg' is not installed"):
        resolve("package:not_a_pkg/x.gguf", cfg.model.reference, 0)
    with pytest.raises(CheckpointError, match="has no config.json"):
        resolve(str(tmp_path), cfg.model.reference, 0)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        resolve(str(tmp_path), cfg.model.reference, 0)


def test_gguf_is_read_as_transformers_reads_it_through_a_float32_snapshot_made_once(tmp_path, monkeypatch):
    """SmolLM2's Q4_1 GGUF: opening the lazy reader dequantizes nothing; the checkpoint is a float32 snapshot made
    a tensor at a time, once (a second resolve dequantizes nothing), and each of its tensors equals, in name, shape,
    dtype and value, what transformers' `load_gguf_checkpoint` gives for the whole file (q/k row order undone)."""
    import gguf
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    calls = []
    dequantize = gguf.dequantize
    monkeypatch.setattr(gguf, "dequantize", lambda *a: calls.append(1) or dequantize(*a))
    cfg = compose_cfg([])
    checkpoint = resolve(cfg.model.checkpoint, cfg.model.reference, cfg.seed, tmp_path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(checkpoint.config)
    lazy = GGUF(checkpoint.path, checkpoint.config.to_dict(), skeleton)
    assert len(calls) == len(lazy.meta) == len(checkpoint.tensors)  # the snapshot's, one each; opening: none
    calls.clear()
    assert isinstance(resolve(cfg.model.checkpoint, cfg.model.reference, cfg.seed, tmp_path).tensors, Safetensors)
    assert not calls
    whole = load_gguf_checkpoint(str(checkpoint.path), return_tensors=True, model_to_load=skeleton)["tensors"]
    assert sorted(whole) == sorted(checkpoint.tensors) == sorted(lazy)
    for name, tensor in whole.items():
        assert checkpoint.tensors.meta[name] == lazy.meta[name] == Meta(tuple(tensor.shape), tensor.dtype), name
        assert torch.equal(checkpoint.tensors[name], tensor), name
    name = "model.layers.3.self_attn.q_proj.weight"
    assert torch.equal(lazy[name], whole[name])


def hub_cache(root: Path, repo: str, folder: Path, revision: str = "main") -> Path:
    """`folder`'s files as huggingface_hub caches a download of `repo` at `revision` (refs/<revision> names a
    snapshot), in `root`: what `hf download` leaves, built without a network."""
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    storage = root / f"models--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    shutil.copytree(folder, storage / "snapshots" / commit)
    return storage / "snapshots" / commit


def test_a_hub_id_resolves_from_the_local_hf_cache_offline(tmp_path, monkeypatch):
    """`model.checkpoint=<org>/<name>[@revision]` is read from huggingface_hub's cache with the Hub unreachable
    (HF_HUB_OFFLINE), the revision's own snapshot; an id not cached is one line that says how to fetch it."""
    from huggingface_hub import constants

    cfg = compose_cfg(["variant=small"])
    resolve("random", cfg.model.reference, cfg.seed, tmp_path / "zoo")  # a HF folder: the small random snapshot
    (snapshot,) = (tmp_path / "zoo" / "random").iterdir()
    main = hub_cache(tmp_path / "hub", "zoo-test/tiny", snapshot)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg.model.checkpoint = "zoo-test/tiny"
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    assert loaded.checkpoint.path == main
    assert pipeline.verify(cfg, loaded).result.passed
    tagged = hub_cache(tmp_path / "hub", "zoo-test/tiny", snapshot, revision="v1")
    assert resolve("zoo-test/tiny@v1", cfg.model.reference, cfg.seed).path == tagged != main
    with pytest.raises(CheckpointError) as err:
        resolve("zoo-test/absent", cfg.model.reference, cfg.seed)
    assert "not in the local Hugging Face cache" in str(err.value) and "`hf download zoo-test/absent`" in str(err.value)
