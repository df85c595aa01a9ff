"""Where the artifact cache (zoo/cache.py) keeps the export of a config: a folder named by the entry, recipe and
cache length plus a hash of everything the file depends on (not the generate, debug or eval settings, the thread
count or the cache's own location), under `cache_root`."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from zoo.files import cache_root
from zoo.schema import DebugConfig, EvalBounds, EvalConfig, GenerateConfig, ZooConfig


def config_hash(cfg: ZooConfig) -> str:
    shaping = replace(
        cfg,
        generate=GenerateConfig(),
        debug=DebugConfig(),
        eval=EvalConfig(),
        quant=replace(cfg.quant, eval=EvalBounds()),
        threads=0,
        cache_dir=None,
    )
    text = OmegaConf.to_yaml(OmegaConf.structured(shaping))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def artifact_dir(cfg: ZooConfig) -> Path:
    name = f"{cfg.model.name}_{cfg.quant.name}_kv{cfg.export.kv_cache_max}"
    if cfg.variant.value != "full":
        name += f"_{cfg.variant.value}"
    return cache_root(cfg.cache_dir) / f"{name}_{config_hash(cfg)}"
