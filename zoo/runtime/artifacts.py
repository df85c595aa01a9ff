"""The export cache of `zoo.generate`: one folder per config, `<generate.artifacts>/<model>_<quant>_kv<N>_<hash>/`.

The hash covers everything that shapes the flatbuffer (model, quant, export, variant, seed, golden), not the
generate or eval sections, a recipe's eval bounds nor threads, so any prompt or sampling setting reuses the same
export. A folder counts only once its report.json says `ok` and the flatbuffer still has the size and sha256
recorded there (the pipeline writes the flatbuffer atomically and the report last); a truncated or edited one is
exported again. A complete folder is read without writing anything, so a read-only cache works; filling one holds
its lock (zoo/files.py), so a second process asking for the same export waits and then uses it. The tokenizer is
saved next to it (`tokenizer/`) so later runs skip the slow GGUF tokenizer conversion.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from zoo.config import EvalBounds, EvalConfig, GenerateConfig, ZooConfig
from zoo.files import atomic_path, locked, remove_stale, write_atomic
from zoo.report import unfinished
from zoo.runtime.generate import Generator
from zoo.runtime.model import LiteModel
from zoo.runtime.tokenizer import checkpoint_file, special_ids, tokenizer_from


def config_hash(cfg: ZooConfig) -> str:
    shaping = replace(cfg, generate=GenerateConfig(), eval=EvalConfig(), quant=replace(cfg.quant, eval=EvalBounds()),
                      threads=0)
    text = OmegaConf.to_yaml(OmegaConf.structured(shaping))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def artifact_dir(cfg: ZooConfig) -> Path:
    name = f"{cfg.model.name}_{cfg.quant.name}_kv{cfg.export.kv_cache_max}"
    if cfg.variant.value != "full":
        name += f"_{cfg.variant.value}"
    return Path(cfg.generate.artifacts) / f"{name}_{config_hash(cfg)}"


def ensure_export(cfg: ZooConfig, log=print) -> Path:
    """The flatbuffer for `cfg`: from the cache, else made by the main pipeline (golden gate, export, check)."""
    from zoo.pipeline import artifact_path

    folder = artifact_dir(cfg)
    if unfinished(folder) is None:
        return artifact_path(cfg, folder)
    with locked(folder, log):
        why = unfinished(folder)  # None: another process made it while this one waited for the lock
        if why is not None:
            from zoo.pipeline import run

            remove_stale(folder)
            if (folder / "report.json").exists():
                log(f"{why}: exporting it again (golden gate, export, check)")
            else:
                log(f"no export for this config in {folder}: running the pipeline (golden gate, export, check)")
            write_atomic(folder / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
            run(cfg, folder)
    return artifact_path(cfg, folder)


def cached_tokenizer(cfg: ZooConfig, folder: Path):
    """The entry's tokenizer, saved into `folder/tokenizer` on first use and read from there after."""
    from transformers import AutoTokenizer

    saved = folder / "tokenizer"
    if saved.is_dir():
        return AutoTokenizer.from_pretrained(saved)
    tokenizer = tokenizer_from(cfg.model.tokenizer, checkpoint_file(cfg.model.checkpoint))
    if tokenizer is not None:
        with locked(folder, log=lambda _: None), atomic_path(saved) as tmp:  # one process at a time replaces it
            tokenizer.save_pretrained(tmp)
    return tokenizer


def open_generator(cfg: ZooConfig, path: Path) -> Generator:
    """A Generator over the flatbuffer at `path` with the entry's tokenizer, chat template and stop tokens."""
    tokenizer = cached_tokenizer(cfg, path.parent)
    _, stops = special_ids(tokenizer, cfg.model.tokenizer)
    model = LiteModel(path, cfg.export.kv_layout, cfg.threads, cfg.generate.prefill_lens)
    return Generator(model, tokenizer, stops, cfg.model.tokenizer.chat_template)
