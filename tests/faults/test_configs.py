"""Category 2, configs: every bad config is refused in one line with exit status 2, before any model is loaded,
and leaves no run directory behind."""

from __future__ import annotations

import pytest

from faults.harness import SMALL, assert_user_error, run_warm, user_error_cases

pytestmark = pytest.mark.slow  # each case a real command (in a forked, warm child: tests/forked.py)

CASES = user_error_cases(
    ("wrong_type", ["model.arch.dim=abc"], "config", ["model.arch.dim"]),
    ("unknown_field", ["model.arch.dimm=3"], "config", ["dimm", "ArchConfig"]),
    ("unknown_entry", ["model=nope"], "config", ["model=nope: no such option", "available", "smollm2_135m"]),
    ("bad_enum", ["export.kv_layout=sideways"], "config", ["kv_layout", "sideways"]),
    ("kv_heads", ["model.arch.attention.num_kv_heads=2"], "config", ["num_kv_heads", "does not divide"]),
    ("negative_dim", ["model.arch.dim=-8"], "config", ["dim"]),
    ("prefill_past_cache", [*SMALL, "export.prefill_lens=[128]"], "config", ["prefill length 128", "kv_cache_max=64"]),
    ("zero_layers", ["model.arch.num_layers=0"], "config", ["num_layers", "positive"]),
    (
        "layer_pattern_too_long",
        ["model=gemma3_1b", "model.arch.num_layers=2"],
        "config",
        ["layer_types", "num_layers=2"],
    ),
    ("cache_past_positions", ["export.kv_cache_max=99999"], "config", ["kv_cache_max=99999", "max_positions"]),
    ("negative_read_multiple", ["export.kv_read_multiple=-1"], "config", ["kv_read_multiple"]),
    ("litertlm_layout", ["export.bundles=[litertlm]"], "config", ["litertlm", "export=litertlm"]),
    (
        "bench_steps_past_cache",
        [*SMALL, "bench.enabled=true", "bench.decode_steps=100"],
        "config",
        ["decode positions", "kv_cache_max=64"],
    ),
    ("recipe_field", ["quant=int8_dynamic", "quant.hadamard_maxx=3"], "config", ["hadamard_maxx"]),
    ("hadamard_block", [*SMALL, "quant=int8_dynamic", "quant.hadamard_max=48"], "config", ["power of two"]),
    ("hadamard_regex", [*SMALL, "quant=int8_dynamic", "quant.hadamard=['(']"], "config", ["not a regex"]),
    (
        "recipe_for_another_kind",
        ["model=minilm_l6", "variant=small", "quant=int8_dynamic"],
        "config",
        ["qkv_proj", "match no weight of minilm_l6"],
    ),
    ("temperature", ["generate.sampling.temperature=-1"], "config", ["sampling.temperature", "-1"]),
    ("top_p", ["generate.sampling.top_p=1.5"], "config", ["top_p"]),
    ("top_k", ["generate.sampling.top_k=-2"], "config", ["top_k"]),
    ("max_new_tokens", ["generate.max_new_tokens=0"], "config", ["max_new_tokens"]),
    (
        "unknown_component",
        [*SMALL, "quant=int8_dynamic", "+quant.components.vision=int8_dynamic"],
        "config",
        ["vision"],
    ),
    (
        "component_matches_nothing",
        ["model=minilm_l6", "variant=small", "quant=int4_block32", "quant.hadamard=[]"],
        "config",
        ["components.attention", "selects no weight of minilm_l6"],
    ),
    (
        "hadamard_matches_nothing",
        [*SMALL, "quant=int8_dynamic", "quant.hadamard=[no_such_layer]"],
        "config",
        ["no_such_layer"],
    ),
)


@pytest.mark.parametrize(("args", "code", "fragments"), CASES)
def test_bad_config_is_one_line_and_leaves_no_run_dir(tmp_path, args, code, fragments):
    run_dir = tmp_path / "run"
    result = run_warm("zoo", *args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_user_error(result, code, *fragments)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read"), (b"", "empty"), (b"  \n", "empty"), (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text")],
    ids=["missing", "empty", "blank", "binary"],
)
def test_bad_prompt_file_is_refused_before_any_model(tmp_path, content, fragment):
    prompt = tmp_path / "prompt.txt"
    if content is not None:
        prompt.write_bytes(content)
    result = run_warm("zoo.generate", *SMALL, f"prompt_file={prompt}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert_user_error(result, "config", "generate.prompt_file", fragment)
    assert not (tmp_path / "cache").exists()
