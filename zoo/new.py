"""`python -m zoo.new <config.json> [--name NAME] [--conf DIR] [--force]`: a draft <DIR>/model/<NAME>.yaml from a
HF config (DIR defaults to the working directory's conf/, which `python -m zoo` searches beside its own entries).

The config is read through transformers' own config class (its defaults and legacy RoPE fields standardised), then
each `arch` field is taken from it; the family YAML supplies the rest (reference class, hf_config interpolation,
mapping rules). The draft passes the golden gate on `variant=small` as written; check real weights with
`python -m zoo model=NAME model.checkpoint=<folder>`.

What zoo.new knows of a HF model_type is data: one file `new/<model_type>.yaml` (schema `HFType` below), looked up
in DIR first and then in the packaged tree (zoo/conf/new/), so adding a model_type is adding that one file. It sits
in its own folder rather than in a `new:` section of model/family/<family>.yaml because several model_types map
onto one family (llama, mistral, qwen2 and qwen3 all draft family/llama entries) and a family YAML is merged into
every entry that names it, where such a section would be dead weight the schema rejects. What every config says
under transformers' standard names (COMMON), the RoPE parameters and the layer pattern are read by the code below
for all model_types alike.
"""

from __future__ import annotations

import enum
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.config import CONF_DIR
from zoo.errors import Arguments, ConfigError
from zoo.files import write_atomic
from zoo.quiet import guarded

CONF = Path("conf")  # the user's own config folder in the working directory: python -m zoo finds it (hydra.searchpath)

# arch field <- transformers' attribute, the same for every config class (attribute_map aliases GPT-2's n_embd ...)
COMMON = {
    "vocab_size": "vocab_size",
    "num_layers": "num_hidden_layers",
    "dim": "hidden_size",
    "max_positions": "max_position_embeddings",
    "attention.num_heads": "num_attention_heads",
    "attention.num_kv_heads": "num_key_value_heads",
    "attention.head_dim": "head_dim",
    "tie_embeddings": "tie_word_embeddings",
}
ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


class Windows(enum.Enum):
    uniform = "uniform"  # one `sliding_window` for every layer, passed to transformers by the entry
    layer_types = "layer_types"  # transformers' per-layer `layer_types`: our repeating pattern, the family passes it


@dataclass
class Activation:
    key: str = MISSING  # the HF attribute naming the activation
    family: str = MISSING  # the value the family's hf_config states literally: a config with another overrides it


@dataclass
class HFType:
    """new/<model_type>.yaml: how a config of that model_type becomes an entry."""

    family: str = MISSING  # model/family/<family>.yaml, the entry's defaults
    hf_class: str = MISSING  # the transformers class the golden gate compares against
    activation: Activation = field(default_factory=Activation)
    read: dict[str, str] = field(default_factory=dict)  # arch field (dotted) <- HF attribute, beyond COMMON
    set: dict[str, Any] = field(default_factory=dict)  # arch field (dotted) -> value, whatever the config says
    unsupported: list[str] = field(default_factory=list)  # HF attributes our layers lack: refused when true
    windows: Optional[Windows] = None  # how sliding-window layers are given; None: refused
    rope_top_level: list[str] = field(default_factory=list)  # RoPE scaling keys the config class also reads at top


def known_types(conf: Path) -> list[str]:
    return sorted({p.stem for root in (conf, CONF_DIR) for p in (root / "new").glob("*.yaml")})


def hf_type(model_type: str, conf: Path) -> HFType:
    """The first new/<model_type>.yaml of the user's `conf` and the packaged tree, checked against HFType."""
    path = next(
        (p for p in (conf / "new" / f"{model_type}.yaml", CONF_DIR / "new" / f"{model_type}.yaml") if p.is_file()), None
    )
    if path is None:
        raise ConfigError(
            f"model_type {model_type!r} is not known to zoo.new (known: {', '.join(known_types(conf))}); "
            f"add {conf / 'new' / f'{model_type}.yaml'} (like {CONF_DIR / 'new' / 'llama.yaml'})"
        )
    try:
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(HFType), OmegaConf.load(path)))
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {str(err).splitlines()[0]}") from None
    if not any((root / "model" / "family" / f"{spec.family}.yaml").is_file() for root in (conf, CONF_DIR)):
        raise ConfigError(f"{path}: family {spec.family!r} has no model/family/{spec.family}.yaml")
    return spec


def hf_config(path: Path, conf: Path):
    from transformers import CONFIG_MAPPING

    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable config.json ({err})") from None
    model_type = raw.get("model_type")
    spec = hf_type(model_type, conf)
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{path}: this transformers has no config class for model_type {model_type!r}")
    return model_type, spec, CONFIG_MAPPING[model_type].from_dict(raw)


def pattern(types: list[str]) -> list[str]:
    """The shortest repeating prefix of transformers' per-layer types, in our names (sliding / full)."""
    ours = [t.removesuffix("_attention") for t in types]
    period = next(p for p in range(1, len(ours) + 1) if all(t == ours[i % p] for i, t in enumerate(ours)))
    return ours[:period]


def floats(values) -> list[float]:
    return [float(v) for v in values]


# rope_type -> our `rope` fields its scaling adds: (the rope_parameters key, its type); the entry passes each back
# to transformers' rope_parameters as an interpolation of ours
ROPE_SCALING = {
    "default": {},
    "linear": {"factor": ("factor", float)},
    "llama3": {
        "factor": ("factor", float),
        "low_freq_factor": ("low_freq_factor", float),
        "high_freq_factor": ("high_freq_factor", float),
        "original_max_positions": ("original_max_position_embeddings", int),
    },
    "longrope": {
        "original_max_positions": ("original_max_position_embeddings", int),
        "short_factor": ("short_factor", floats),
        "long_factor": ("long_factor", floats),
    },
}


def rope_fields(rope: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Our `rope` fields from one transformers rope_parameters dict; scaling fields also go to `extra`, the
    entry's additions to the family's hf_config rope_parameters."""
    rope_type = rope.get("rope_type", "default")
    if rope_type not in ROPE_SCALING:
        raise ConfigError(f"rope_type {rope_type!r} is not supported ({', '.join(ROPE_SCALING)})")
    out: dict[str, Any] = {"theta": float(rope["rope_theta"])}
    if rope_type != "default":
        out["scaling"] = rope_type
    for ours, (theirs, cast) in ROPE_SCALING[rope_type].items():
        out[ours] = cast(rope[theirs])
        extra[theirs] = f"${{model.arch.rope.{ours}}}"
    return out


def put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def entry(model_type: str, spec: HFType, c, name: str, checkpoint: str) -> dict[str, Any]:
    """The entry as a dict: defaults, name, arch fields from the config, reference additions, checkpoint."""
    for attr in spec.unsupported:
        if getattr(c, attr, None):
            raise ConfigError(f"{model_type} with {attr}={getattr(c, attr)!r} is not supported")
    arch: dict[str, Any] = {}
    for ours, theirs in {**COMMON, **spec.read}.items():
        if getattr(c, theirs, None) is not None:  # absent or null: the family's or the schema's default
            put(arch, ours, getattr(c, theirs))
    for ours, value in spec.set.items():
        put(arch, ours, value)
    attention, mlp = arch["attention"], arch.setdefault("mlp", {})
    attention.setdefault("num_kv_heads", attention["num_heads"])
    mlp.setdefault("hidden_dim", 4 * arch["dim"])
    act = getattr(c, spec.activation.key, None)
    if act not in ACTIVATIONS:
        raise ConfigError(f"activation {act!r} is not supported (known: {', '.join(ACTIVATIONS)})")
    mlp["activation"] = ACTIVATIONS[act]
    hf: dict[str, Any] = {}
    reference: dict[str, Any] = {"hf_class": spec.hf_class, "hf_config": hf}
    if act != spec.activation.family:
        hf[spec.activation.key] = act
    rope_extra: dict[str, Any] = {}
    params = getattr(c, "rope_parameters", None)
    if params and "full_attention" in params:  # per layer type (Gemma 3): global layers scale, sliding ones do not
        arch["rope"] = rope_fields(params["full_attention"], rope_extra)
        arch["rope"]["local_theta"] = float(params["sliding_attention"]["rope_theta"])
        if rope_extra:
            hf["rope_parameters"] = {"full_attention": rope_extra}
    elif params:
        arch["rope"] = rope_fields(params, rope_extra)
        arch["rope"]["fraction"] = float(params.get("partial_rotary_factor", 1.0))
        if rope_extra:
            hf["rope_parameters"] = rope_extra
    for key in spec.rope_top_level:
        if key in rope_extra:
            hf[key] = rope_extra[key]
    layer_types = getattr(c, "layer_types", None) or []
    window = getattr(c, "sliding_window", None)
    if spec.windows is Windows.uniform:  # a window as long as the context never masks anything: full attention
        slides = bool(window) and window < c.max_position_embeddings
        layer_types = ["sliding_attention"] if slides else []
        hf["sliding_window"] = "${model.arch.attention.sliding_window}" if slides else None
    elif spec.windows is None and "sliding_attention" in layer_types:
        raise ConfigError(
            f"sliding-window layers of model_type {model_type!r} are not supported (new/<model_type>.yaml: windows)"
        )
    if layer_types:
        attention["layer_types"] = pattern(layer_types)
        if "sliding" in attention["layer_types"]:
            attention["sliding_window"] = window
    if not hf:
        del reference["hf_config"]
    return {
        "defaults": [f"family/{spec.family}@_here_", "_self_"],
        "name": name,
        "arch": arch,
        "reference": reference,
        "checkpoint": checkpoint,
    }


def default_name(path: Path) -> str:
    """The config's folder name as an entry name: Qwen3-0.6B -> qwen3_0_6b."""
    return re.sub(r"[^a-z0-9]+", "_", path.resolve().parent.name.lower()).strip("_") or "new_model"


def has_weights(folder: Path) -> bool:
    return any(
        (folder / n).exists()
        for n in (
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        )
    )


def write(config_path: Path, name: str | None, conf: Path, force: bool) -> Path:
    model_type, spec, c = hf_config(config_path, conf)
    name = name or default_name(config_path)
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ConfigError(f"--name {name!r}: use lower-case letters, digits and underscores")
    out = conf / "model" / f"{name}.yaml"
    if conf.resolve() != CONF_DIR.resolve() and (CONF_DIR / "model" / f"{name}.yaml").exists():
        raise ConfigError(
            f"{name} is a packaged entry (zoo/conf/model/{name}.yaml), which would win over a draft of "
            "that name: give --name <another>"
        )
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    folder = config_path.resolve().parent
    data = entry(model_type, spec, c, name, str(folder) if has_weights(folder) else "random")
    header = (
        f"# Draft by `python -m zoo.new {config_path}` (model_type {model_type}). Check it with\n"
        f"# `python -m zoo model={name} variant=small`, then on real weights with model.checkpoint=<folder>.\n"
    )
    write_atomic(out, header + yaml.safe_dump(data, sort_keys=False, width=120))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Arguments(prog="python -m zoo.new", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a HF config.json")
    parser.add_argument("--name", help="entry name (default: the config's folder name)")
    parser.add_argument(
        "--conf",
        type=Path,
        default=CONF,
        help="config root: model/<name>.yaml is written there, new/<model_type>.yaml read there first",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing entry")
    args = parser.parse_args(argv)
    print(f"wrote {write(args.config, args.name, args.conf, args.force)}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("zoo.new", main, sys.argv[1:]))
