"""A zoo run's config: the schemas (zoo/schema.py) registered in Hydra's ConfigStore, composed, loaded, and checked
across fields after composition.

Hydra checks field names, types and Enum values while it composes; `validate` checks what a schema cannot say
alone (divisibility, pattern lengths ...). Both end in a `ConfigError` naming the field and the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.errors import ConfigError
from zoo.schema import (
    ArchConfig,
    Bundle,
    GenerateConfig,
    KVLayout,
    LayerType,
    Positions,
    PrefillLogits,
    RopeScaling,
    Variant,
    ZooConfig,
    head_dim,
    rotary_dim,
    sampling_problem,
)

KindProblems = Callable[[ZooConfig], list[str]]  # zoo.kinds.problems: what the entry's kind finds wrong


def hf_layer_types(pattern, num_layers: int) -> list[str]:
    """Our repeated layer pattern as transformers' per-layer `layer_types` list (resolver `hf_layer_types`)."""
    return [f"{LayerType(pattern[i % len(pattern)]).value}_attention" for i in range(num_layers)]


OmegaConf.register_new_resolver("hf_layer_types", hf_layer_types, replace=True)

CONF_DIR = Path(__file__).parent / "conf"  # the packaged config tree; users' own entries come from ./conf (searchpath)
SCHEMA = "zoo_schema"
GROUPS = ("model", "quant", "export", "bench", "eval")
ConfigStore.instance().store(name=SCHEMA, node=ZooConfig)


def job_dirname(override_dirname: str, limit: int = 160) -> str:
    """A sweep job's folder name from Hydra's `override_dirname`, safe for shells and for TensorFlow's file
    patterns (it globs saved-model paths: `[8]` breaks an export): list brackets dropped, list commas as `-`,
    path separators and glob characters as `_`; past `limit` characters cut and ended by a hash of the whole
    (file names stop at 255 bytes). `quant=none,export.prefill_lens=[8,16]` -> `quant=none,export.prefill_lens=8-16`."""
    out, depth = [], 0
    for ch in override_dirname:
        depth += (ch == "[") - (ch == "]")
        if ch in "[]'\"":
            continue
        out.append("-" if ch == "," and depth else "_" if ch in "/\\*?{} " else ch)
    name = "".join(out) or "default"
    if len(name) > limit:
        name = f"{name[: limit - 9]}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


OmegaConf.register_new_resolver("zoo_job_dirname", job_dirname, replace=True)  # conf/config.yaml hydra.sweep.subdir


def load(cfg: DictConfig, choices: dict[str, str], kind_problems: KindProblems) -> ZooConfig:
    """The composed (schema-typed) config shrunk if `variant=small`, resolved to dataclasses and validated.

    `choices` maps each config group to the option Hydra picked (e.g. model -> smollm2_135m), so an error can name
    the file it came from; `kind_problems` (zoo.kinds.problems, given by the entry point: the schema sits below the
    kinds) adds what the entry's kind finds wrong to the same error.
    """
    from zoo.variants import shrink

    try:
        if cfg.variant == Variant.small:
            shrink(cfg)
        obj: ZooConfig = OmegaConf.to_object(cfg)
        extra = unknown_keys(OmegaConf.to_container(cfg), OmegaConf.to_container(OmegaConf.structured(obj)))
    except OmegaConfBaseException as err:
        raise ConfigError(describe(err, choices)) from None
    if extra:  # `+key=value` adds keys past the schema, which to_object would drop without a word
        raise ConfigError(f"{extra[0]}: not a field of the schema (zoo/schema.py): remove it or fix its name")
    if obj.eval.enabled or obj.quant.candidates:  # the eval scores every prefill position (zoo/kinds/decoder/eval.py)
        obj.export.prefill_logits = PrefillLogits.all
    validate(obj, source_file("model", choices), kind_problems)
    if obj.generate.prompt_file is not None:
        obj.generate.prompt = read_prompt_file(obj.generate)
    return obj


def unknown_keys(raw: Any, typed: Any, prefix: str = "") -> list[str]:
    """Dotted keys present in the composed config but not in its typed object."""
    if not isinstance(raw, dict) or not isinstance(typed, dict):
        return []
    out = []
    for key, value in raw.items():
        if key not in typed:
            out.append(f"{prefix}{key}")
        else:
            out += unknown_keys(value, typed[key], f"{prefix}{key}.")
    return out


def read_prompt_file(generate: GenerateConfig) -> str:
    """The prompt file's text; a missing, unreadable, empty or binary file is a ConfigError."""
    path = Path(generate.prompt_file).expanduser()
    if generate.prompt:
        raise ConfigError("generate.prompt and generate.prompt_file are both set: give one of them")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"generate.prompt_file={path}: cannot read it ({err.strerror}): give an existing text file"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise ConfigError(f"generate.prompt_file={path}: not UTF-8 text (binary data?): give a text file")
    if not text.strip():
        raise ConfigError(f"generate.prompt_file={path}: the file is empty: write the prompt into it")
    return text


def source_file(group: str, choices: dict[str, str]) -> str:
    return f"conf/{group}/{choices[group]}.yaml" if group in choices else "the command line"


def describe(err: BaseException, choices: dict[str, str]) -> str:
    """One line: the file, the dotted field and what is wrong with it, from OmegaConf's or Hydra's error."""
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    text = str(err)
    key = getattr(cause, "full_key", None) or next(iter(re.findall(r"full_key: (\S+)", text)), "")
    lines = [ln.strip() for ln in str(getattr(cause, "msg", None) or text).splitlines()]
    lines = [ln for ln in lines if ln and "raised while composing" not in ln and not ln.startswith("full_key")]
    where = re.search(r"In '([\w/.-]+)'", text)
    if where:
        source = f"conf/{where.group(1)}.yaml"
    elif text.startswith(("Error merging override", "Could not override")):
        source = "command line override"
    else:
        source = source_file(key.split(".")[0], choices)
    options = re.findall(r"^\t(\S+)$", text, flags=re.M)  # Hydra lists a group's options after a bad choice
    hint = f" (available: {', '.join(options)})" if options else ""
    if missing := re.search(r"Could not find '(\w+)/([^']+)'", text):  # a group option no file provides
        group, name = missing.groups()
        return f"{group}={name}: no such option in zoo's conf/{group}/ nor in ./conf/{group}/{hint}"
    return f"{source}: {key or 'config'}: {lines[0] if lines else type(err).__name__}{hint}"


def composition_error(err: BaseException, overrides: list[str]) -> ConfigError:
    """Hydra's multi-line composition error as one ConfigError line; `overrides` name the chosen group files."""
    choices = dict(o.split("=", 1) for o in overrides if "=" in o and o.split("=", 1)[0] in GROUPS)
    choices.setdefault("model", "smollm2_135m")
    return ConfigError(describe(err, choices))


def validate(cfg: ZooConfig, source: str, kind_problems: KindProblems) -> None:
    """Checks that need several fields at once; raises one ConfigError with every problem found (each naming its
    field, and for the architecture `source`, the file), the kind's (`kind_problems(cfg)`) included."""
    problems = arch_problems(cfg.model.arch, source) + kind_problems(cfg)
    if cfg.export.output is not None and not cfg.export.output.endswith(".tflite"):
        problems.append(f"export.output={cfg.export.output}: give a path ending in .tflite")
    if cfg.export.kv_read_multiple < 0:  # above kv_cache_max it reads every slot, like 0 with a run-time size
        problems.append(
            f"export.kv_read_multiple={cfg.export.kv_read_multiple} must be >= 0 (0 reads every cache slot)"
        )
    bench = cfg.bench
    for key in ("repeats", "decode_steps", "bandwidth_mib"):
        if getattr(bench, key) < 1:
            problems.append(f"bench.{key}: must be at least 1, got {getattr(bench, key)}")
    if bench.warmup < 0:
        problems.append(f"bench.warmup: must be >= 0, got {bench.warmup}")
    if bench.enabled and bench.warmup + bench.decode_steps > cfg.export.kv_cache_max:
        problems.append(
            f"bench: warmup + decode_steps = {bench.warmup + bench.decode_steps} decode positions do not "
            f"fit export.kv_cache_max={cfg.export.kv_cache_max}"
        )
    if Bundle.litertlm in cfg.export.bundles and (
        cfg.export.kv_layout is not KVLayout.transposed or not cfg.export.mask_as_input
    ):
        problems.append(
            "export.bundles: litertlm needs export.kv_layout=transposed and export.mask_as_input=true "
            "(use export=litertlm)"
        )
    if cfg.export.bundles and cfg.model.tokenizer.source == "none":
        problems.append("export.bundles: a bundle needs the entry's tokenizer but model.tokenizer.source is none")
    if cfg.debug.top < 1 or cfg.debug.blame < 0:
        problems.append(f"debug: top must be >= 1 and blame >= 0, got {cfg.debug.top} and {cfg.debug.blame}")
    problem = sampling_problem(cfg.generate.sampling)
    if problem:
        problems.append(f"generate.{problem}")
    if cfg.generate.max_new_tokens < 1:
        problems.append(f"generate.max_new_tokens must be >= 1, got {cfg.generate.max_new_tokens}")
    if problems:
        raise ConfigError.of(problems)


def arch_problems(arch: ArchConfig, source: str) -> list[str]:
    """What is wrong with the architecture, each line naming `source` and the field; the checks that derive sizes
    (head_dim, rotary dims) only once the sizes they divide by are valid."""
    att, problems = arch.attention, []

    def fail(key: str, why: str) -> None:
        problems.append(f"{source}: model.arch.{key}: {why}")

    for key in ("vocab_size", "num_layers", "dim", "max_positions"):
        if getattr(arch, key) <= 0:
            fail(key, f"must be positive, got {getattr(arch, key)}")
    if att.num_heads <= 0 or att.num_kv_heads <= 0:
        fail("attention.num_heads", f"heads must be positive, got {att.num_heads} / {att.num_kv_heads} kv")
    if arch.mlp.hidden_dim <= 0:
        fail("mlp.hidden_dim", f"must be positive, got {arch.mlp.hidden_dim}")
    if arch.tie_embeddings and arch.lm_head_bias:
        fail("lm_head_bias", "a tied lm_head has no bias of its own; set tie_embeddings=false")
    if LayerType.sliding in att.layer_types and not att.sliding_window:
        fail("attention.sliding_window", "sliding layers in layer_types need a positive sliding_window")
    if arch.rope.local_theta is not None and LayerType.sliding not in att.layer_types:
        fail("rope.local_theta", "set, but no layer is 'sliding'")
    if problems:
        return problems
    if len(att.layer_types) > arch.num_layers:
        fail("attention.layer_types", f"pattern of {len(att.layer_types)} is longer than num_layers={arch.num_layers}")
    if att.num_heads % att.num_kv_heads:
        fail("attention.num_kv_heads", f"{att.num_kv_heads} does not divide num_heads={att.num_heads}")
    if att.head_dim is None and arch.dim % att.num_heads:
        fail("attention.head_dim", f"not set and dim={arch.dim} is not a multiple of num_heads={att.num_heads}")
        return problems
    if arch.positions is Positions.rope:
        if not 0 < arch.rope.fraction <= 1:
            fail("rope.fraction", f"must be in (0, 1], got {arch.rope.fraction}")
        elif rotary_dim(arch) % 2:
            fail("rope.fraction", f"rotary dims {rotary_dim(arch)} of head_dim={head_dim(arch)} must be even")
        elif arch.rope.scaling is RopeScaling.longrope:
            for key in ("short_factor", "long_factor"):
                if len(getattr(arch.rope, key)) != rotary_dim(arch) // 2:
                    fail(
                        f"rope.{key}",
                        f"longrope needs rotary_dim/2={rotary_dim(arch) // 2} values, got "
                        f"{len(getattr(arch.rope, key))}",
                    )
    return problems


def compose_config(overrides: list[str], kind_problems: KindProblems) -> ZooConfig:
    """The config `python -m zoo overrides` would run, validated: for the commands that compose outside Hydra's main
    (zoo.generate, zoo.debug)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            raw = compose("config", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as err:
            raise composition_error(err, overrides) from None
    choices = dict(a.split("=", 1) for a in overrides if a.split("=", 1)[0] in GROUPS)
    choices.setdefault("model", "smollm2_135m")
    return load(raw, choices, kind_problems)
