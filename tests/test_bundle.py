"""Bundles from the pipeline: the `.litertlm` runs in the real LiteRT-LM runtime and says what our runtime says."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from zoo import pipeline
from zoo.bundle import BundleError, task
from zoo.cache import open_generator
from zoo.errors import ConfigError

from conftest import compose_cfg
from small_runtime import tiny_sentencepiece, tiny_tokenizer

pytestmark = pytest.mark.slow  # bundles of real exports

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def litertlm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    cfg = compose_cfg(
        [
            "model=tinyllama",
            "variant=small",
            f"model.tokenizer.source={tiny_tokenizer(root / 'tok')}",
            "export=litertlm",
            "export.prefill_lens=[8,32]",
            "export.kv_cache_max=128",
            "export.check_steps=8",
        ]
    )
    report = pipeline.run(cfg, root / "run")
    return cfg, report


def test_litertlm_preset_writes_the_bundle(litertlm_run):
    _cfg, report = litertlm_run
    made = report["bundles"]["litertlm"]
    assert made["path"].endswith("tinyllama_none_kv128.litertlm")
    assert made["size_bytes"] > report["export"]["size_bytes"]
    assert "bundle" in report["timings"]


def test_litertlm_greedy_text_equals_our_runtime(litertlm_run):
    """LiteRT-LM's own engine on the bundle (its tokenizer, prompt template, start token, greedy sampler) writes
    the same text as zoo's runtime on the flatbuffer with the entry's tokenizer and chat template."""
    import litert_lm

    cfg, report = litertlm_run
    ours = open_generator(cfg, Path(report["export"]["path"])).generate(PROMPT, 24)
    engine = litert_lm.Engine(report["bundles"]["litertlm"]["path"], litert_lm.Backend.CPU())
    session = engine.create_session(apply_prompt_template=True, max_output_tokens=24)
    session.run_prefill([PROMPT])
    theirs = session.run_decode().texts[0]
    assert len(ours.ids) >= 8 and ours.text.strip()
    assert theirs == ours.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["export=default", "export.bundles=[litertlm]"], "litertlm needs export.kv_layout=transposed"),
        (["export=litertlm", "model.tokenizer.source=none"], "a bundle needs the entry's tokenizer"),
    ],
)
def test_bundle_config_errors_come_before_export(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_cfg(["model=tinyllama", *overrides])


def test_task_bundle_needs_a_sentencepiece_model(litertlm_run, tmp_path):
    """MediaPipe's bundler takes only SentencePiece; a tokenizer.json BPE tokenizer is refused in one line."""
    cfg, report = litertlm_run
    generator = open_generator(cfg, Path(report["export"]["path"]))
    with pytest.raises(BundleError, match="needs a SentencePiece tokenizer.model"):
        task(cfg, tmp_path / "m.tflite", generator.tokenizer, tmp_path / "m.task")
    assert not (tmp_path / "m.task").exists()


def test_task_bundle_holds_model_tokenizer_and_metadata(tmp_path):
    """With a SentencePiece tokenizer, `export.bundles=[task]` writes MediaPipe's bundle: a zip of the flatbuffer,
    the tokenizer model and the bundler's metadata."""
    sp = tiny_sentencepiece(tmp_path / "sp")
    cfg = compose_cfg(
        [
            "model=tinyllama",
            "variant=small",
            f"model.tokenizer.source={sp}",
            "export.bundles=[task]",
            "export.prefill_lens=[16]",
            "export.kv_cache_max=64",
            "export.check_steps=4",
        ]
    )
    report = pipeline.run(cfg, tmp_path / "run")
    path = report["bundles"]["task"]["path"]
    with zipfile.ZipFile(path) as bundle:
        assert sorted(bundle.namelist()) == ["METADATA", "TF_LITE_PREFILL_DECODE", "TOKENIZER_MODEL"]
        assert bundle.read("TOKENIZER_MODEL") == (sp / "tokenizer.model").read_bytes()
        assert bundle.read("TF_LITE_PREFILL_DECODE") == Path(report["export"]["path"]).read_bytes()
        assert b"</s>" in bundle.read("METADATA")


def test_litert_lm_compare_times_every_bundle_in_every_round(litertlm_run, tmp_path):
    """`python -m zoo.runtime.speed A.litertlm B.litertlm`: LiteRT-LM's benchmark of each bundle, alternating."""
    import shutil

    from zoo.runtime.speed import litert_lm_compare

    _, report = litertlm_run
    first = report["bundles"]["litertlm"]["path"]
    second = shutil.copy(first, tmp_path / "copy.litertlm")
    stats = litert_lm_compare([first, str(second)], rounds=2, prefill_tokens=16, decode_tokens=8)
    assert list(stats) == [first, str(second)]
    for bundle in stats.values():
        for key in ("prefill_tps", "decode_tps"):
            assert 0 < bundle[key]["min"] <= bundle[key]["median"] <= bundle[key]["max"]


def test_speed_cli_refuses_missing_files_and_unknown_layouts(litertlm_run):
    from zoo.errors import InputError
    from zoo.runtime.speed import main

    _, report = litertlm_run
    for argv, message in (
        (["x.litertlm"], "no such file: x.litertlm"),
        ([report["export"]["path"], "bthn"], "its KV layout (btnh or transposed)"),
        ([report["export"]["path"], "btnh"], "laid out transposed, not btnh"),
    ):
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            main(argv)
