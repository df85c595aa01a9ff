"""Shared helpers: compose a config through Hydra's compose API exactly as `python -m zoo` does."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from zoo import kinds
from zoo.config import CONF_DIR as CONF
from zoo.config import composition_error, load
from zoo.schema import ZooConfig

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
# no test writes into the user's own export cache (zoo/cache.py); subprocesses inherit this. The session that made
# it removes it at exit (a full-suite cache is several GB: left behind, they filled the disk).
if "ZOO_CACHE" not in os.environ:
    os.environ["ZOO_CACHE"] = tempfile.mkdtemp(prefix="zoo-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ZOO_CACHE"], ignore_errors=True)
ENTRIES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def compose_cfg(overrides: list[str], search_path: Path | None = None) -> ZooConfig:
    """The validated config of `python -m zoo <overrides>`, with the same one-line errors."""
    hydra_overrides = [f"hydra.searchpath=[file://{search_path}]"] if search_path else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            raw = compose("config", overrides=[*overrides, *hydra_overrides])
        except (HydraException, OmegaConfBaseException) as err:
            raise composition_error(err, overrides) from None
    choices = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("model", "quant", "export"))
    choices.setdefault("model", "smollm2_135m")
    return load(raw, choices, kinds.problems)


@pytest.fixture(params=ENTRIES)
def entry(request) -> str:
    """Every YAML in zoo/conf/model/: a new entry is tested without touching test code."""
    return request.param


def entries_of(*kinds: str) -> list[str]:
    """The entries of the given kinds (tests of one kind's signatures and checks pick up every entry of it)."""
    return [e for e in ENTRIES if compose_cfg([f"model={e}"]).model.kind in kinds]


@pytest.fixture(params=entries_of("decoder"))
def decoder_entry(request) -> str:
    """Every decoder YAML in zoo/conf/model/."""
    return request.param
