"""Progress bars on a terminal, silence in logs: tqdm on stderr, disabled when stderr is not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, **kwargs) -> tqdm:
    """A bar over `iterable` (or one to `.update()` by hand) that only draws when stderr is a terminal."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not on_terminal(),
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        **kwargs,
    )


# The bar of the run in progress, advanced by each timed stage (zoo/resources.py) without being passed to it.
_stages: ContextVar[tqdm | None] = ContextVar("zoo_stages", default=None)


@contextmanager
def stage_bar(total: int, desc: str) -> Iterator[tqdm]:
    """A bar of `total` stages for the block: each stage timed inside it shows its name, then ticks once."""
    bar = progress(total=total, desc=desc, unit="stage")
    token = _stages.set(bar)
    try:
        yield bar
    finally:
        _stages.reset(token)
        bar.close()


def stage_started(name: str) -> None:
    if (bar := _stages.get()) is not None:
        bar.set_postfix_str(name)


def stage_ended() -> None:
    if (bar := _stages.get()) is not None:
        bar.update()
