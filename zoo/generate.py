"""`python -m zoo.generate [group=option ...] prompt="..." [max_new_tokens=N] [sampling.temperature=T ...]`

The main command's config (same groups and overrides) plus its `generate` section, whose fields may be given
without the `generate.` prefix. Generates from the flatbuffer of that config, exporting it first when the cache
(`generate.artifacts`, see zoo/runtime/artifacts.py) has none; streams the text, then prints the speed line.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from zoo.config import CONF_DIR, GROUPS, GenerateConfig, ZooConfig, composition_error, load
from zoo.errors import ConfigError, guarded
from zoo.runtime.model import exit_quietly

SHORT = {f.name for f in dataclasses.fields(GenerateConfig)}


def overrides(argv: list[str]) -> list[str]:
    """Command-line overrides with the generate section's fields prefixed (`prompt=x` -> `generate.prompt=x`)."""
    return [f"generate.{a}" if a.split("=", 1)[0].split(".", 1)[0] in SHORT else a for a in argv]


def compose_config(argv: list[str]) -> ZooConfig:
    args = overrides(argv)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            raw = compose("config", overrides=args)
        except (HydraException, OmegaConfBaseException) as err:
            raise composition_error(err, args) from None
    choices = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in GROUPS)
    choices.setdefault("model", "smollm2_135m")
    return load(raw, choices)


def main(argv: list[str]) -> int:
    from zoo.pipeline import preflight
    from zoo.runtime.artifacts import ensure_export, open_generator

    cfg = compose_config(argv)
    if cfg.generate.max_new_tokens >= cfg.export.kv_cache_max:  # refused before an export, not after
        raise ConfigError(f"generate.max_new_tokens={cfg.generate.max_new_tokens} must be below export.kv_cache_max="
                          f"{cfg.export.kv_cache_max} (the prompt needs at least one cache slot)")
    preflight(cfg)
    path = ensure_export(cfg, log=lambda s: print(s, file=sys.stderr))
    generator = open_generator(cfg, path)
    result = generator.generate(cfg.generate.prompt, cfg.generate.max_new_tokens, cfg.generate.sampling,
                                on_text=lambda s: print(s, end="", flush=True))
    if result.text is None:
        print(" ".join(map(str, result.ids)), end="")
    print(f"\n[{path.name}] {result.stats.line()}")
    return 0


if __name__ == "__main__":
    exit_quietly(guarded("zoo.generate", lambda: main(sys.argv[1:]), sys.argv[1:]))
