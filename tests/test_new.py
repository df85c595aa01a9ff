"""`python -m zoo.new`: a draft entry from transformers' own config.json passes the golden gate with no edits."""

from __future__ import annotations

import subprocess
import sys

import pytest
import transformers

from zoo import pipeline
from zoo.errors import ConfigError
from zoo.kinds import kind_of
from zoo.new import hf_type, main

from conftest import ROOT, compose_cfg

TINY = {"vocab_size": 1000, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4}
CONFIGS = {  # one per family; sizes as the config says, sliding windows and patterns as transformers builds them
    "qwen3": lambda: transformers.Qwen3Config(**TINY, num_hidden_layers=3, num_key_value_heads=2, head_dim=32),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(
        **TINY, num_hidden_layers=8, num_key_value_heads=1, head_dim=32, sliding_window=16
    ),
    "gemma2": lambda: transformers.Gemma2Config(**TINY, num_hidden_layers=4, num_key_value_heads=2, head_dim=32),
    "phi": lambda: transformers.PhiConfig(**TINY, num_hidden_layers=2),
    "phi3": lambda: transformers.Phi3Config(**TINY, num_hidden_layers=2, pad_token_id=None, sliding_window=64),
    "mistral": lambda: transformers.MistralConfig(**TINY, num_hidden_layers=2, num_key_value_heads=2),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4),
}


def drafts_and_passes(config, tmp_path, conf) -> None:
    """`config` saved, drafted into `conf`, composed as the entry `drafted`, and its small variant gated."""
    config.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf" / "config.json"), "--name", "drafted", "--conf", str(conf)]) == 0
    full = compose_cfg(["model=drafted"], search_path=conf)
    assert (full.model.arch.dim, full.model.arch.num_layers) == (config.hidden_size, config.num_hidden_layers)
    assert full.model.reference.hf_class == hf_type(config.model_type, conf).hf_class
    cfg = compose_cfg(["model=drafted", "variant=small"], search_path=conf)
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    result = pipeline.verify(cfg, loaded).result.to_report()
    assert result["passed"] and result["max_abs_diff"] <= cfg.golden.atol


FAST = {"qwen3", "phi"}  # the fast tier's drafts; every family in the full suite


@pytest.mark.parametrize("model_type", [t if t in FAST else pytest.param(t, marks=pytest.mark.slow) for t in CONFIGS])
def test_draft_entry_passes_the_golden_gate(model_type, tmp_path):
    drafts_and_passes(CONFIGS[model_type](), tmp_path, tmp_path / "conf")


MINISTRAL = """# MinistralForCausalLM configs -> family/llama: Mistral's layers, one sliding window for every layer.
family: llama
hf_class: MinistralForCausalLM
activation: {key: hidden_act, family: silu}
read: {norm.eps: rms_norm_eps, mlp.hidden_dim: intermediate_size}
windows: uniform
"""


def test_a_model_type_is_one_yaml_file_in_the_users_conf(tmp_path):
    """A model_type the package does not know, added as conf/new/ministral.yaml alone, drafts a gated entry."""
    conf = tmp_path / "conf"
    config = transformers.MinistralConfig(**TINY, num_hidden_layers=2, num_key_value_heads=2, sliding_window=16)
    with pytest.raises(ConfigError, match=r"model_type 'ministral' is not known.*add .*new/ministral\.yaml"):
        hf_type("ministral", conf)
    (conf / "new").mkdir(parents=True)
    (conf / "new" / "ministral.yaml").write_text(MINISTRAL)
    drafts_and_passes(config, tmp_path, conf)
    assert compose_cfg(["model=drafted"], search_path=conf).model.arch.attention.sliding_window == 16


def test_refuses_unknown_type_and_overwrite(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="model_type 'bert' is not known.*gemma3_text"):
        main([str(tmp_path / "config.json"), "--conf", str(tmp_path)])
    transformers.LlamaConfig(**TINY, num_hidden_layers=2).save_pretrained(tmp_path)
    assert main([str(tmp_path / "config.json"), "--name", "mine", "--conf", str(tmp_path)]) == 0
    before = (tmp_path / "model" / "mine.yaml").read_text()
    with pytest.raises(ConfigError, match="exists; pass --force"):
        main([str(tmp_path / "config.json"), "--name", "mine", "--conf", str(tmp_path)])
    assert (tmp_path / "model" / "mine.yaml").read_text() == before
    assert main([str(tmp_path / "config.json"), "--name", "mine", "--conf", str(tmp_path), "--force"]) == 0
    with pytest.raises(ConfigError, match=r"tinyllama is a packaged entry .* give --name <another>"):
        main([str(tmp_path / "config.json"), "--name", "tinyllama", "--conf", str(tmp_path)])


@pytest.mark.slow  # a subprocess
def test_runs_as_a_module(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    out = subprocess.run(
        [sys.executable, "-m", "zoo.new", str(tmp_path / "config.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and out.stderr.startswith("zoo.new: error [config]: ") and out.stderr.count("\n") == 1
