"""`python -m zoo.generate [group=option ...] prompt="..." [max_new_tokens=N] [sampling.temperature=T ...]`

The main command's config (same groups and overrides) plus its `generate` section, whose fields may be given
without the `generate.` prefix. Generates from the flatbuffer of that config, exporting it first when the export
cache (zoo/cache.py: `cache_dir=`, $ZOO_CACHE or ~/.cache/zoo) has none; streams the text, then prints the speed
line. The whole config, the prompt and its length are checked before any export runs.
"""

from __future__ import annotations

import dataclasses
import sys

from zoo import config
from zoo.errors import ConfigError, InputError
from zoo.quiet import exit_quietly, guarded
from zoo.schema import GenerateConfig, ZooConfig

SHORT = {f.name for f in dataclasses.fields(GenerateConfig)}


def overrides(argv: list[str]) -> list[str]:
    """Command-line overrides with the generate section's fields prefixed (`prompt=x` -> `generate.prompt=x`)."""
    return [f"generate.{a}" if a.split("=", 1)[0].split(".", 1)[0] in SHORT else a for a in argv]


def compose_config(argv: list[str]) -> ZooConfig:
    """The job's config from the command line (`prompt=...` and the sampling keys are generate's)."""
    from zoo import kinds  # not at the top: --help needs no torch

    return config.compose_config(overrides(argv), kinds.problems)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    from zoo.artifacts import artifact_dir
    from zoo.cache import cached_tokenizer, ensure_export, open_generator
    from zoo.pipeline import preflight
    from zoo.runtime.generate import prompt_ids

    cfg = compose_config(argv)
    if cfg.generate.max_new_tokens >= cfg.export.kv_cache_max:
        raise ConfigError(
            f"generate.max_new_tokens={cfg.generate.max_new_tokens} must be below export.kv_cache_max="
            f"{cfg.export.kv_cache_max} (the prompt needs at least one cache slot)"
        )
    preflight(cfg)
    tokenizer = cached_tokenizer(cfg, artifact_dir(cfg))
    tokens = len(prompt_ids(tokenizer, cfg.generate.prompt, cfg.model.tokenizer.chat_template))
    if tokens + cfg.generate.max_new_tokens > cfg.export.kv_cache_max:  # refused before an export, not after
        raise InputError(
            f"prompt of {tokens} tokens + max_new_tokens={cfg.generate.max_new_tokens} = "
            f"{tokens + cfg.generate.max_new_tokens} exceeds export.kv_cache_max={cfg.export.kv_cache_max}: "
            "shorten the prompt, lower generate.max_new_tokens or raise export.kv_cache_max"
        )
    path = ensure_export(cfg, log=lambda s: print(s, file=sys.stderr))
    generator = open_generator(cfg, path)
    result = generator.generate(
        cfg.generate.prompt,
        cfg.generate.max_new_tokens,
        cfg.generate.sampling,
        on_text=lambda s: print(s, end="", flush=True),
    )
    if result.text is None:
        print(" ".join(map(str, result.ids)), end="")
    print(f"\n[{path.name}] {result.stats.line()}")
    return 0


if __name__ == "__main__":
    exit_quietly(guarded("zoo.generate", lambda: main(sys.argv[1:]), sys.argv[1:]))
