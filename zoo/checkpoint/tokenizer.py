"""The entry's tokenizer, loaded through transformers: the checkpoint's own (tokenizer.json, SentencePiece or the one
inside a GGUF), or a folder. Build side: the runtime (zoo/runtime/tokenizer.py) only calls the object it is given."""

from __future__ import annotations

from pathlib import Path

from zoo.checkpoint import Checkpoint
from zoo.errors import ConfigError
from zoo.schema import TokenizerConfig


def load_tokenizer(cfg: TokenizerConfig, checkpoint: Checkpoint):
    """A transformers tokenizer, or None when the entry has none (random weights, `source: none`)."""
    return tokenizer_from(cfg, checkpoint.path)


def checkpoint_file(spec: str) -> Path | None:
    """Where a checkpoint spec's files are, without reading its tensors (None for random weights)."""
    from zoo.checkpoint.sources import package_file

    if spec == "random":
        return None
    return package_file(spec) if spec.startswith("package:") else Path(spec).expanduser()


def tokenizer_from(cfg: TokenizerConfig, checkpoint_path: Path | None):
    from transformers import AutoTokenizer

    if cfg.source == "none":
        return None
    if cfg.source != "checkpoint":
        folder = Path(cfg.source).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"model.tokenizer.source={cfg.source}: not a folder; give a tokenizer folder (tokenizer.json, "
                "or tokenizer.model with tokenizer_config.json), `checkpoint` or `none`"
            )
        try:
            return AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"model.tokenizer.source={cfg.source}: transformers cannot load a tokenizer from it "
                f"({str(err).splitlines()[0]})"
            ) from None
    if checkpoint_path is None:
        return None
    if checkpoint_path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(checkpoint_path.parent, gguf_file=checkpoint_path.name)
    return AutoTokenizer.from_pretrained(checkpoint_path)
