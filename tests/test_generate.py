"""The runtime on a small variant's flatbuffer: chunked prefill, greedy vs torch, sampling, stops, refusals, CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from zoo import pipeline
from zoo.artifacts import artifact_dir
from zoo.cache import ensure_export, open_generator
from zoo.errors import InputError
from zoo.files import cache_root
from zoo.kinds import kind_of
from zoo.kinds.decoder.gate import our_greedy, our_prefill
from zoo.runtime import LiteModel, stream
from zoo.schema import SamplingConfig

from conftest import ROOT, compose_cfg
from small_runtime import tiny_tokenizer

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """tinyllama's small variant with a tiny real tokenizer, exported with prefill_8 and prefill_32 over kv 128,
    into the generate cache the CLI looks in; plus the PyTorch model the flatbuffer came from."""
    root = tmp_path_factory.mktemp("generate")
    overrides = [
        "model=tinyllama",
        "variant=small",
        f"model.tokenizer.source={tiny_tokenizer(root / 'tok')}",
        "export.prefill_lens=[8,32]",
        "export.kv_cache_max=128",
        "export.check_steps=8",
        f"cache_dir={root / 'artifacts'}",
    ]
    cfg = compose_cfg(overrides)
    path = ensure_export(cfg, log=lambda s: None)
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    return cfg, path, loaded.model, overrides


def ids(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, 512, n).tolist()


def first_logits(model: LiteModel, prompt: list[int]) -> np.ndarray:
    pos = 0
    for sig, n in model.prefill_plan(0, len(prompt) - 1):
        model.step(sig, prompt[pos : pos + n], pos)
        pos += n
    return model.step("decode", [prompt[-1]], pos)[0, -1].copy()


def test_export_lands_in_cache_and_is_reused(small):
    cfg, path, _, _ = small
    assert path.parent == artifact_dir(cfg) and path.exists()
    assert ensure_export(cfg, log=pytest.fail) == path  # complete: not exported again
    log = (path.parent / "pipeline.log").read_text()  # the stage lines, as `python -m zoo` writes its job log
    assert "golden: started" in log and "check: started" in log and "peak RSS" in log


def test_chunked_prefill_equals_single_prefill(small):
    """A 41-token prompt through prefill_8 chunks (+ padded remainder), one prefill_32 + padded rest, or decode
    steps only: the same first logits, equal to the PyTorch model's."""
    cfg, path, model, _ = small
    prompt = ids(41)
    chunked = LiteModel(path, cfg.export.kv_layout, prefill_lens=[8])
    assert chunked.prefill_plan(0, 40) == [("prefill_8", 8)] * 5
    assert chunked.prefill_plan(0, 43) == [("prefill_8", 8)] * 5 + [("prefill_8", 3)]
    assert chunked.prefill_plan(123, 4) == [("decode", 1)] * 4  # padding would pass kv_cache_max=128
    both = LiteModel(path, cfg.export.kv_layout)
    assert both.prefill_plan(0, 40) == [("prefill_32", 32), ("prefill_8", 8)]
    steps = LiteModel(path, cfg.export.kv_layout, prefill_lens=[])
    torch_logits = our_prefill(model, prompt, cfg.export.kv_cache_max)[0][-1].numpy()
    for lite in (chunked, both, steps):
        np.testing.assert_allclose(first_logits(lite, prompt), torch_logits, atol=1e-4)
    np.testing.assert_allclose(first_logits(chunked, prompt), first_logits(both, prompt), atol=1e-5)


def test_greedy_generate_equals_torch_greedy(small):
    cfg, path, model, _ = small
    prompt = ids(20, seed=1)
    lite = LiteModel(path, cfg.export.kv_layout)
    ours = list(stream(lite, prompt, 24, SamplingConfig()))
    assert ours == our_greedy(model, prompt, 24, cfg.export.kv_cache_max)
    assert list(stream(lite, prompt, 24, SamplingConfig())) == ours  # a second run on the same interpreter


def test_sampling_is_deterministic_under_a_seed(small):
    cfg, path, _, _ = small
    lite = LiteModel(path, cfg.export.kv_layout)
    prompt = ids(12, seed=2)

    def run(**kw):
        return list(stream(lite, prompt, 16, SamplingConfig(**kw)))

    hot = {"temperature": 1.5, "top_k": 100, "top_p": 0.95}
    assert run(seed=7, **hot) == run(seed=7, **hot)
    assert run(seed=7, **hot) != run(seed=8, **hot)
    assert run(seed=3, temperature=1.0, top_k=1) == run()  # top-1 is greedy
    assert run(seed=3, temperature=1.0, top_p=1e-6) == run()  # the smallest nucleus is the argmax


def test_stop_token_ends_generation(small):
    cfg, path, _, _ = small
    lite = LiteModel(path, cfg.export.kv_layout)
    prompt = ids(10, seed=3)
    free = list(stream(lite, prompt, 16, SamplingConfig()))
    cut = next(i for i, t in enumerate(free) if i > 0 and t not in free[:i])
    from zoo.runtime import Stats

    stats = Stats()
    assert list(stream(lite, prompt, 16, SamplingConfig(), stop_ids=[free[cut]], stats=stats)) == free[:cut]
    assert (stats.stop, stats.new_tokens) == ("stop_token", cut)


def test_text_generation_stops_at_the_tokenizers_eos(small):
    cfg, path, _, _ = small
    generator = open_generator(cfg, path)
    assert generator.stop_ids == [generator.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    pieces = []
    result = generator.generate(PROMPT, 12, on_text=pieces.append)
    assert "".join(pieces) == result.text and len(result.ids) == result.stats.new_tokens <= 12


@pytest.mark.parametrize(
    ("prompt", "max_new", "message"),
    [
        ([], 4, "empty prompt"),
        ([5, 512, 7], 4, r"token id 512 at prompt position 1 is outside the vocabulary \[0, 512\)"),
        ([-1], 4, "token id -1 at prompt position 0"),
        (list(range(100)), 29, r"prompt of 100 tokens \+ max_new_tokens=29 = 129 exceeds kv_cache_max=128"),
        ([1, 2], 0, "max_new_tokens must be >= 1"),
    ],
)
def test_bad_requests_are_refused_up_front(small, prompt, max_new, message):
    cfg, path, _, _ = small
    with pytest.raises(InputError, match=message):
        next(stream(LiteModel(path, cfg.export.kv_layout), prompt, max_new, SamplingConfig()))


def test_unknown_signature_is_refused(small):
    cfg, path, _, _ = small
    with pytest.raises(InputError, match=r"prefill_16 is not a signature of .*\(has decode, prefill_32, prefill_8\)"):
        LiteModel(path, cfg.export.kv_layout, prefill_lens=[16])


def generate_cli(*args, tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "zoo.generate", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home)},
    )


@pytest.mark.slow
def test_cli_streams_text_and_prints_speed(small, tmp_path):
    *_, overrides = small
    result = generate_cli(*overrides, f"prompt={PROMPT}", "max_new_tokens=8", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("[tinyllama_none_kv128.tflite] prefill 23 tokens at ") and " tok/s, decode " in last


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["prompt="], "zoo.generate: error [input]: empty prompt: give some text (generate.prompt=...) or token ids"),
        (
            ["prompt=hi", "max_new_tokens=120"],
            "zoo.generate: error [input]: prompt of 18 tokens + max_new_tokens=120 = 138 "
            "exceeds export.kv_cache_max=128: shorten the prompt, lower generate.max_new_tokens "
            "or raise export.kv_cache_max",
        ),
        (
            ["prompt=hi", "prefill_lens=[16]"],
            "zoo.generate: error [input]: prefill_16 is not a signature of "
            "tinyllama_none_kv128.tflite (has decode, prefill_32, prefill_8)",
        ),
        (
            ["prompt=hi", "sampling.top_p=0"],
            "zoo.generate: error [config]: generate.sampling.top_p must be in (0, 1] (1: no cut), got 0.0",
        ),
        (
            ["prompt=hi", "sampling.tmperature=1"],
            "zoo.generate: error [config]: command line override: "
            "generate.sampling.tmperature: Key 'tmperature' not in 'SamplingConfig'",
        ),
    ],
)
def test_cli_errors_are_one_line(small, tmp_path, args, line):
    *_, overrides = small
    result = generate_cli(*overrides, *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == line
    assert result.stdout == ""


def test_cache_root_is_the_users(monkeypatch, tmp_path):
    """One export cache per user: `cache_dir=`, else $ZOO_CACHE, else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo."""
    monkeypatch.delenv("ZOO_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root(None) == tmp_path / ".cache" / "zoo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(None) == tmp_path / "xdg" / "zoo"
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "env"))
    assert cache_root(None) == tmp_path / "env"
    assert cache_root("~/mine") == tmp_path / "mine"


@pytest.mark.slow
def test_generate_from_another_folder_reuses_the_export(small, tmp_path):
    """The cache does not depend on the working folder: a second folder generates without exporting again, and
    `python -m zoo.cache` lists the entry with its size; `--clear` empties the cache."""
    _cfg, path, _, overrides = small
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        result = generate_cli(*overrides, "prompt=hi", "max_new_tokens=2", tmp_path=tmp_path / folder)
        assert result.returncode == 0 and "running the pipeline" not in result.stderr, result.stderr
    copy = tmp_path / "copy"
    shutil.copytree(path.parent.parent, copy)
    listing = subprocess.run([sys.executable, "-m", "zoo.cache", str(copy)], capture_output=True, text=True, check=True)
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split()[2:] == [path.parent.name, "ok"] and float(lines[0].split()[0]) > 0
    assert lines[-1].endswith(f"{copy} (1 entries; clear: python -m zoo.cache --clear)")
    cleared = subprocess.run([sys.executable, "-m", "zoo.cache", "--clear", str(copy)], capture_output=True, text=True)
    assert cleared.returncode == 0 and cleared.stdout.strip() == f"cleared {copy}: 1 entries"
    assert list(copy.iterdir()) == []
