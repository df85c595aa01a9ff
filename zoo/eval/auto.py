"""`quant=auto`: the smallest recipe whose measured quality meets the bound.

Every candidate (`quant.candidates`: built-in recipes and per-component variants) is exported from the verified
model into the export cache of `zoo.generate` (one folder per config hash, so a second search exports nothing),
then the candidates are tried smallest file first (ties by name) on a short eval of `quant.auto_windows` windows;
the first within `quant.max_kld` and the `quant.eval` bounds wins. Deterministic: same config, same files, same
choice. The winner then runs as the job's recipe (export, check, full eval) and is written out as a recipe file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.config import CONF_DIR
from zoo.errors import ConfigError
from zoo.eval.stage import eval_failures, measure
from zoo.files import write_atomic
from zoo.resources import timed
from zoo.results import Chosen
from zoo.schema import QuantConfig, ZooConfig


def candidate_recipes(quant: QuantConfig) -> list[QuantConfig]:
    """The candidates as full recipes, each gated by the search's bounds (max_kld and `quant.eval`)."""
    bounds = replace(quant.eval, max_kld=quant.max_kld)
    out = []
    for c in quant.candidates:
        path = CONF_DIR / "quant" / f"{c.recipe}.yaml"
        if not path.is_file():
            raise ConfigError(f"quant.candidates: no recipe conf/quant/{c.recipe}.yaml")
        try:
            node = OmegaConf.merge(
                OmegaConf.structured(QuantConfig), OmegaConf.load(path), c.set, {"name": c.name or c.recipe}
            )
            recipe: QuantConfig = OmegaConf.to_object(node)
        except OmegaConfBaseException as err:
            raise ConfigError(f"quant.candidates: {c.name or c.recipe}: {str(err).splitlines()[0]}") from None
        if recipe.candidates:
            raise ConfigError(f"quant.candidates: {c.recipe} is a search itself")
        out.append(replace(recipe, eval=bounds))
    return out


def choose(cfg: ZooConfig, loaded, run_dir: Path, flatbuffer: Callable[[ZooConfig], Path]) -> Chosen:
    """The job's config with the chosen recipe, and report.json's `auto`: every candidate tried and why the winner
    won. `flatbuffer(cfg)`: a candidate's flatbuffer, from the export cache (the pipeline's `cached_export`)."""
    short = replace(cfg.eval, enabled=True, max_windows=cfg.quant.auto_windows)
    tried, chosen = [], None
    with timed("auto") as clock:
        candidates = [(q, flatbuffer(replace(cfg, quant=q))) for q in candidate_recipes(cfg.quant)]
        candidates.sort(key=lambda c: (c[1].stat().st_size, c[0].name))
        for recipe, path in candidates:
            section = measure(
                replace(cfg, quant=recipe, eval=short), loaded.kind, path, loaded.checkpoint, loaded.tokenizer
            )
            failures = eval_failures(section, recipe.eval)
            tried.append(
                {
                    "name": recipe.name,
                    "size_bytes": path.stat().st_size,
                    "file": str(path),
                    **{k: section.get(k) for k in ("kld_mean", "ppl_ratio", "same_top", "cosine_mean", "tokens")},
                    "passed": not failures,
                    "failures": failures,
                }
            )
            if not failures:
                chosen = recipe
                break
    bound = (
        ", ".join(
            f"{k} {v:g}" for k, v in vars(replace(cfg.quant.eval, max_kld=cfg.quant.max_kld)).items() if v is not None
        )
        or "no bound"
    )
    section = {
        "bounds": bound,
        "windows": short.max_windows,
        "candidates": tried,
        "untried": [q.name for q, _ in candidates[len(tried) :]],
    }
    if chosen is None:
        failure = (
            f"quant=auto: no candidate meets {bound} on {short.max_windows} windows (largest tried: "
            f"{tried[-1]['name']}: {'; '.join(tried[-1]['failures'])})"
        )
        return Chosen(section, None, failure, clock.timing)
    smaller = "; ".join(f"{t['name']} ({t['size_bytes'] / 1e6:.1f} MB): {', '.join(t['failures'])}" for t in tried[:-1])
    section["chosen"] = chosen.name
    section["why"] = (
        f"{chosen.name} is the smallest file ({tried[-1]['size_bytes'] / 1e6:.1f} MB) whose short eval "
        f"meets {bound}" + (f"; smaller files miss it: {smaller}" if smaller else "")
    )
    recipe_file = run_dir / "quant" / f"auto_{chosen.name}.yaml"  # not shadowed by conf/quant/<name>.yaml
    write_atomic(recipe_file, OmegaConf.to_yaml(OmegaConf.structured(chosen)))
    section["recipe_file"] = str(recipe_file)
    section["reproduce"] = f"python -m zoo quant=auto_{chosen.name} hydra.searchpath=[file://{run_dir.resolve()}]"
    return Chosen(section, replace(cfg, quant=chosen, eval=replace(cfg.eval, enabled=True)), None, clock.timing)
