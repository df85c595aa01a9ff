"""The entry's tokenizer: the checkpoint's own (tokenizer.json, SentencePiece or the one inside a GGUF), or a path;
its chat template and its start / stop tokens."""
from __future__ import annotations

from pathlib import Path

from zoo.checkpoint import Checkpoint
from zoo.config import ConfigError, TokenizerConfig


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
            raise ConfigError(f"model.tokenizer.source={cfg.source}: not a folder; give a tokenizer folder (tokenizer.json, "
                              "or tokenizer.model with tokenizer_config.json), `checkpoint` or `none`")
        try:
            return AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as err:
            raise ConfigError(f"model.tokenizer.source={cfg.source}: transformers cannot load a tokenizer from it "
                              f"({str(err).splitlines()[0]})") from None
    if checkpoint_path is None:
        return None
    if checkpoint_path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(checkpoint_path.parent, gguf_file=checkpoint_path.name)
    return AutoTokenizer.from_pretrained(checkpoint_path)


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of one user turn, through the chat template when the entry uses one and the tokenizer has it."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    return tokenizer(text)["input_ids"]


def special_ids(tokenizer, cfg: TokenizerConfig) -> tuple[int | None, list[int]]:
    """(start id, stop ids): the entry's `start_token` / `stop_tokens` when set, else the tokenizer's bos / eos."""
    if tokenizer is None:
        return None, []
    vocab = tokenizer.get_vocab()

    def ids(tokens: list[str]) -> list[int]:
        for token in tokens:
            if token not in vocab:
                raise ConfigError(f"model.tokenizer: {token!r} is not a token of the entry's tokenizer")
        return [vocab[t] for t in tokens]

    start = ids([cfg.start_token])[0] if cfg.start_token else tokenizer.bos_token_id
    stops = ids(list(cfg.stop_tokens)) if cfg.stop_tokens else [tokenizer.eos_token_id]
    return start, [s for s in stops if s is not None]
