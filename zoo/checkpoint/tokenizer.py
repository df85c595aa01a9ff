"""The entry's tokenizer, loaded through transformers: the checkpoint's own (tokenizer.json, SentencePiece or the one
inside a GGUF), or a folder. Build side: the runtime (zoo/runtime/tokenizer.py) only calls the object it is given."""

from __future__ import annotations

from pathlib import Path

from zoo.checkpoint import Checkpoint
from zoo.checkpoint.lazy import unreadable
from zoo.errors import ConfigError
from zoo.files import atomic_path
from zoo.schema import TokenizerConfig


def load_tokenizer(cfg: TokenizerConfig, checkpoint: Checkpoint):
    """A transformers tokenizer, or None when the entry has none (random weights, `source: none`)."""
    return tokenizer_from(cfg, checkpoint.path)


def checkpoint_file(spec: str) -> Path | None:
    """Where a checkpoint spec's files are, without reading its tensors (None for random weights)."""
    from zoo.checkpoint.sources import spec_path

    return None if spec == "random" else spec_path(spec)


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
    with unreadable(checkpoint_path, "the checkpoint's tokenizer (tokenizer.json, tokenizer_config.json, ...)"):
        if checkpoint_path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(checkpoint_path.parent, gguf_file=checkpoint_path.name)
        return AutoTokenizer.from_pretrained(checkpoint_path)


def save_tokenizer(tokenizer, folder: Path) -> Path:
    """The tokenizer's files (tokenizer.json, its config and chat template) in `folder`, written via a temp folder."""
    with atomic_path(folder) as tmp:
        tokenizer.save_pretrained(tmp)
    return folder


def prompt_affixes(tokenizer, start: str) -> dict[str, tuple[str, str]]:
    """The chat template as LiteRT-LM's per-turn (prefix, suffix) pairs, read off renderings with marker contents.

    LiteRT-LM 0.18 renders a jinja template with each message's content as a list of parts, which templates that
    concatenate `message['content']` as a string (SmolLM2's, most ChatML ones) cannot take; affixes work for all.
    A default system turn the template adds to the first user turn goes into the first user prefix; the start token
    LiteRT-LM prepends itself is cut from it.
    """

    def render(messages, generation=False) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    user, model = [{"role": "user", "content": "\x01"}], [{"role": "assistant", "content": "\x02"}]
    user_turn = render(user)
    user_prefix, user_suffix = user_turn.split("\x01")
    model_prefix = render(user, generation=True)[len(user_turn) :]
    model_suffix = render(user + model).split("\x02")[1]
    return {"user": (user_prefix.removeprefix(start), user_suffix), "model": (model_prefix, model_suffix)}
