"""The entry's tokenizer: the checkpoint's own (tokenizer.json, SentencePiece or the one inside a GGUF), or a path."""
from __future__ import annotations

from pathlib import Path

from zoo.checkpoint import Checkpoint
from zoo.config import TokenizerConfig


def load_tokenizer(cfg: TokenizerConfig, checkpoint: Checkpoint):
    """A transformers tokenizer, or None when the entry has none (random weights, `source: none`)."""
    from transformers import AutoTokenizer

    if cfg.source == "none":
        return None
    if cfg.source != "checkpoint":
        return AutoTokenizer.from_pretrained(Path(cfg.source).expanduser())
    if checkpoint.path is None:
        return None
    if checkpoint.path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(checkpoint.path.parent, gguf_file=checkpoint.path.name)
    return AutoTokenizer.from_pretrained(checkpoint.path)


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of one user turn, through the chat template when the entry uses one and the tokenizer has it."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    return tokenizer(text)["input_ids"]
