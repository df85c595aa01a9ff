"""The generate loop over a `LiteModel`: checked prompt in, tokens out one at a time (an iterator), with timings.

Prefill writes all prompt tokens but the last (in chunks of the prefill signatures); decode of the last prompt token
gives the first logits, so prefill never needs its own logits and padding in its last chunk is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from zoo.errors import InputError
from zoo.runtime.model import LiteModel
from zoo.runtime.sampling import Sampler
from zoo.schema import SamplingConfig


@dataclass
class Stats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0  # prompt in, first logits out (includes decode of the last prompt token)
    decode_seconds: float = 0.0  # decode steps after the first token, sampling included
    decode_steps: int = 0
    stop: str = ""  # "stop_token" or "max_new_tokens"

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds else 0.0

    def line(self) -> str:
        return (
            f"prefill {self.prompt_tokens} tokens at {self.prefill_tps:.0f} tok/s, decode {self.new_tokens} "
            f"tokens at {self.decode_tps:.1f} tok/s (stop: {self.stop})"
        )


@dataclass
class Result:
    ids: list[int]
    text: str | None
    stats: Stats = field(default_factory=Stats)


def validate_prompt(ids: Sequence[int], max_new_tokens: int, model: LiteModel) -> None:
    """Refuse up front what cannot run: nothing is wrapped or truncated."""
    if not ids:
        raise InputError("empty prompt: give some text (generate.prompt=...) or token ids")
    if max_new_tokens < 1:
        raise InputError(f"generate.max_new_tokens must be >= 1, got {max_new_tokens}")
    bad = next(((i, t) for i, t in enumerate(ids) if not 0 <= t < model.vocab_size), None)
    if bad:
        raise InputError(
            f"token id {bad[1]} at prompt position {bad[0]} is outside the vocabulary "
            f"[0, {model.vocab_size}) of {model.path.name}"
        )
    if len(ids) + max_new_tokens > model.kv_max:
        raise InputError(
            f"prompt of {len(ids)} tokens + max_new_tokens={max_new_tokens} = {len(ids) + max_new_tokens} exceeds "
            f"kv_cache_max={model.kv_max} of {model.path.name}: shorten the prompt, lower generate.max_new_tokens or "
            f"export with a larger export.kv_cache_max"
        )


def stream(
    model: LiteModel,
    ids: Sequence[int],
    max_new_tokens: int,
    sampling: SamplingConfig,
    stop_ids: Sequence[int] = (),
    stats: Stats | None = None,
) -> Iterator[int]:
    """New token ids as they are chosen, up to a stop token (not yielded) or max_new_tokens; `stats` is filled in."""
    validate_prompt(ids, max_new_tokens, model)
    stats = stats if stats is not None else Stats()
    stats.prompt_tokens = len(ids)
    sample, stops, clock = Sampler(sampling), set(stop_ids), time.perf_counter
    start = clock()
    pos = 0
    for signature, n in model.prefill_plan(0, len(ids) - 1):
        model.step(signature, ids[pos : pos + n], pos, logits=False)
        pos += n
    token = sample(model.step("decode", [ids[-1]], pos)[0, -1])
    stats.prefill_seconds = clock() - start
    for i in range(max_new_tokens):
        if token in stops:
            stats.stop = "stop_token"
            return
        stats.new_tokens += 1
        yield token
        if i == max_new_tokens - 1:
            break
        pos += 1
        start = clock()
        token = sample(model.step("decode", [token], pos)[0, -1])
        stats.decode_seconds += clock() - start
        stats.decode_steps += 1
    stats.stop = "max_new_tokens"


def prompt_ids(tokenizer, prompt: str | Sequence[int], chat: bool) -> list[int]:
    """The ids a prompt runs as: token ids as given, text through the tokenizer (and its chat template)."""
    from zoo.runtime.tokenizer import encode_prompt

    if not isinstance(prompt, str):
        return [int(t) for t in prompt]
    if not prompt.strip():
        raise InputError("empty prompt: give some text (generate.prompt=...) or token ids")
    if tokenizer is None:
        raise InputError("this entry has no tokenizer (model.tokenizer.source): give token ids, not text")
    return encode_prompt(tokenizer, prompt, chat)


class Generator:
    """A flatbuffer plus its tokenizer: text (or ids) in, text out, streamed to `on_text` as it decodes."""

    def __init__(self, model: LiteModel, tokenizer=None, stop_ids: Sequence[int] = (), chat: bool = True):
        self.model, self.tokenizer, self.stop_ids, self.chat = model, tokenizer, list(stop_ids), chat

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        return prompt_ids(self.tokenizer, prompt, self.chat)

    def generate(
        self,
        prompt: str | Sequence[int],
        max_new_tokens: int,
        sampling: SamplingConfig | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Result:
        stats = Stats()
        out: list[int] = []
        printed = ""
        sampling = sampling or SamplingConfig()
        for token in stream(self.model, self.encode(prompt), max_new_tokens, sampling, self.stop_ids, stats):
            out.append(token)
            if self.tokenizer is not None and on_text is not None:
                text = self.tokenizer.decode(out, skip_special_tokens=True)
                if not text.endswith("\ufffd"):  # an incomplete UTF-8 sequence waits for its next byte
                    on_text(text[len(printed) :])
                    printed = text
        text = self.tokenizer.decode(out, skip_special_tokens=True) if self.tokenizer is not None else None
        if on_text is not None and text is not None and len(text) > len(printed):
            on_text(text[len(printed) :])
        return Result(out, text, stats)
