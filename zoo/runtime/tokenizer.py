"""A prompt's token ids through the entry's chat template, and its start / stop tokens. Duck-typed on the tokenizer
object it is given (transformers' API), so the runtime imports no transformers itself."""

from __future__ import annotations

from zoo.errors import ConfigError
from zoo.schema import TokenizerConfig


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of one user turn, through the chat template when the entry uses one and the tokenizer has it."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        return list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
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
