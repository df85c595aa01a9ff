"""`python -m zoo.new <config.json> [--name NAME] [--force]`: a draft ./conf/model/<NAME>.yaml from a HF config
(the working directory's conf/, which `python -m zoo` searches beside its own entries).

The config is read through transformers' own config class (its defaults and legacy RoPE fields standardised), then
each `arch` field is taken from it; the family YAML supplies the rest (reference class, hf_config interpolation,
mapping rules). The draft passes the golden gate on `variant=small` as written; check real weights with
`python -m zoo model=NAME model.checkpoint=<folder>`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ConfigError, guarded
from zoo.files import write_atomic

CONF = Path("conf")  # the user's own config folder in the working directory: python -m zoo finds it (hydra.searchpath)

# model_type -> (family YAML, transformers class)
FAMILIES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("llama", "MistralForCausalLM"),
    "qwen2": ("llama", "Qwen2ForCausalLM"),
    "qwen3": ("llama", "Qwen3ForCausalLM"),
    "gemma": ("gemma", "GemmaForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3_text": ("gemma3", "Gemma3ForCausalLM"),
    "phi": ("phi", "PhiForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
    "gpt2": ("gpt2", "GPT2LMHeadModel"),
}
ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
WINDOW_TYPES = ("mistral", "phi3")  # one sliding_window for every layer, passed to transformers by the entry
# The activation each family's hf_config states literally: a config with another one overrides it.
FAMILY_ACT = {"llama": ("hidden_act", "silu"), "phi3": ("hidden_act", "silu"), "phi": ("hidden_act", "gelu_new"),
              "gemma": ("hidden_activation", "gelu_pytorch_tanh"), "gemma2": ("hidden_activation", "gelu_pytorch_tanh"),
              "gemma3": ("hidden_activation", "gelu_pytorch_tanh"), "gpt2": ("activation_function", "gelu_new")}


def hf_config(path: Path):
    from transformers import CONFIG_MAPPING

    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable config.json ({err})") from None
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"{path}: model_type {model_type!r} is not known to zoo.new (known: {', '.join(FAMILIES)})")
    return model_type, CONFIG_MAPPING[model_type].from_dict(raw)


def pattern(types: list[str]) -> list[str]:
    """The shortest repeating prefix of transformers' per-layer types, in our names (sliding / full)."""
    ours = [t.removesuffix("_attention") for t in types]
    period = next(p for p in range(1, len(ours) + 1) if all(t == ours[i % p] for i, t in enumerate(ours)))
    return ours[:period]


def rope_fields(rope: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Our `rope` fields from one transformers rope_parameters dict; scaling fields also go to `extra`, the
    entry's additions to the family's hf_config rope_parameters."""
    rope_type = rope.get("rope_type", "default")
    out: dict[str, Any] = {"theta": float(rope["rope_theta"])}
    if rope_type == "linear":
        out.update(scaling="linear", factor=float(rope["factor"]))
        extra["factor"] = "${model.arch.rope.factor}"
    elif rope_type == "llama3":
        out.update(scaling="llama3", factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
                   high_freq_factor=float(rope["high_freq_factor"]),
                   original_max_positions=int(rope["original_max_position_embeddings"]))
        extra.update(factor="${model.arch.rope.factor}", low_freq_factor="${model.arch.rope.low_freq_factor}",
                     high_freq_factor="${model.arch.rope.high_freq_factor}",
                     original_max_position_embeddings="${model.arch.rope.original_max_positions}")
    elif rope_type == "longrope":
        out.update(scaling="longrope", original_max_positions=int(rope["original_max_position_embeddings"]),
                   short_factor=[float(f) for f in rope["short_factor"]],
                   long_factor=[float(f) for f in rope["long_factor"]])
        extra.update(short_factor="${model.arch.rope.short_factor}", long_factor="${model.arch.rope.long_factor}",
                     original_max_position_embeddings="${model.arch.rope.original_max_positions}")
    elif rope_type != "default":
        raise ConfigError(f"rope_type {rope_type!r} is not supported (default, linear, llama3, longrope)")
    return out


def entry(model_type: str, c, name: str, checkpoint: str) -> dict[str, Any]:
    """The entry as a dict: defaults, name, arch fields from the config, reference additions, checkpoint."""
    family, hf_class = FAMILIES[model_type]
    heads = c.num_attention_heads
    dim = c.hidden_size
    act = getattr(c, "hidden_activation", None) or getattr(c, "hidden_act", None) or c.activation_function
    if act not in ACTIVATIONS:
        raise ConfigError(f"activation {act!r} is not supported (known: {', '.join(ACTIVATIONS)})")
    hidden = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * dim
    eps = next(getattr(c, k) for k in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon") if hasattr(c, k))
    attention: dict[str, Any] = {"num_heads": heads, "num_kv_heads": getattr(c, "num_key_value_heads", None) or heads}
    if getattr(c, "head_dim", None):
        attention["head_dim"] = c.head_dim
    arch: dict[str, Any] = {"vocab_size": c.vocab_size, "num_layers": c.num_hidden_layers, "dim": dim,
                            "max_positions": c.max_position_embeddings, "norm": {"eps": float(eps)},
                            "attention": attention,
                            "mlp": {"hidden_dim": hidden, "activation": ACTIVATIONS[act]},
                            "tie_embeddings": bool(c.tie_word_embeddings)}
    reference: dict[str, Any] = {"hf_class": hf_class, "hf_config": {}}
    act_key, family_act = FAMILY_ACT[family]
    if act != family_act:
        reference["hf_config"][act_key] = act
    rope_extra: dict[str, Any] = {}
    if family == "llama" or family == "phi3":
        attention["qkv_bias"] = model_type == "qwen2" or bool(getattr(c, "attention_bias", False))
        arch["mlp"]["bias"] = bool(getattr(c, "mlp_bias", False))
        attention["qk_norm"] = model_type == "qwen3"
    if model_type == "phi" and c.qk_layernorm:
        raise ConfigError("phi with qk_layernorm is not supported")
    if model_type == "gemma3_text":
        params = c.rope_parameters
        arch["rope"] = rope_fields(params["full_attention"], rope_extra)
        arch["rope"]["local_theta"] = float(params["sliding_attention"]["rope_theta"])
        if rope_extra:
            reference["hf_config"]["rope_parameters"] = {"full_attention": rope_extra}
            rope_extra = {}
    elif model_type != "gpt2":
        arch["rope"] = rope_fields(c.rope_parameters, rope_extra)
        arch["rope"]["fraction"] = float(c.rope_parameters.get("partial_rotary_factor", 1.0))
    if rope_extra:
        reference["hf_config"]["rope_parameters"] = rope_extra
    if model_type in ("gemma2", "gemma3_text"):
        attention["query_pre_attn_scalar"] = c.query_pre_attn_scalar
        attention["logit_softcap"] = c.attn_logit_softcapping
        arch["final_logit_softcap"] = c.final_logit_softcapping
    layer_types = getattr(c, "layer_types", None) or []
    window = getattr(c, "sliding_window", None)
    if model_type in WINDOW_TYPES:  # a window as long as the context never masks anything: full attention
        slides = bool(window) and window < c.max_position_embeddings
        layer_types = ["sliding_attention"] if slides else []
        reference["hf_config"]["sliding_window"] = "${model.arch.attention.sliding_window}" if slides else None
    elif model_type not in ("gemma2", "gemma3_text") and "sliding_attention" in layer_types:
        raise ConfigError(f"sliding-window layers of model_type {model_type!r} are not supported")
    if layer_types:
        attention["layer_types"] = pattern(layer_types)
        if "sliding" in attention["layer_types"]:
            attention["sliding_window"] = window
    if model_type == "phi3" and arch["rope"].get("scaling") == "longrope":  # Phi3Config's own top-level copy
        reference["hf_config"]["original_max_position_embeddings"] = "${model.arch.rope.original_max_positions}"
    if not reference["hf_config"]:
        del reference["hf_config"]
    return {"defaults": [f"family/{family}@_here_", "_self_"], "name": name, "arch": arch, "reference": reference,
            "checkpoint": checkpoint}


def default_name(path: Path) -> str:
    """The config's folder name as an entry name: Qwen3-0.6B -> qwen3_0_6b."""
    return re.sub(r"[^a-z0-9]+", "_", path.resolve().parent.name.lower()).strip("_") or "new_model"


def has_weights(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("model.safetensors", "model.safetensors.index.json",
                                               "pytorch_model.bin", "pytorch_model.bin.index.json"))


def write(config_path: Path, name: str | None, conf: Path, force: bool) -> Path:
    model_type, c = hf_config(config_path)
    name = name or default_name(config_path)
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ConfigError(f"--name {name!r}: use lower-case letters, digits and underscores")
    out = conf / "model" / f"{name}.yaml"
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    folder = config_path.resolve().parent
    data = entry(model_type, c, name, str(folder) if has_weights(folder) else "random")
    header = (f"# Draft by `python -m zoo.new {config_path}` (model_type {model_type}). Check it with\n"
              f"# `python -m zoo model={name} variant=small`, then on real weights with model.checkpoint=<folder>.\n")
    write_atomic(out, header + yaml.safe_dump(data, sort_keys=False, width=120))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.new", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a HF config.json")
    parser.add_argument("--name", help="entry name (default: the config's folder name)")
    parser.add_argument("--conf", type=Path, default=CONF, help="config root to write model/<name>.yaml into")
    parser.add_argument("--force", action="store_true", help="overwrite an existing entry")
    args = parser.parse_args(argv)
    print(f"wrote {write(args.config, args.name, args.conf, args.force)}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("zoo.new", main, sys.argv[1:]))
