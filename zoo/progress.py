"""Progress bars on a terminal, silence in logs: tqdm on stderr, disabled when stderr is not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable
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
