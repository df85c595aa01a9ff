"""`python -m zoo.debug.serve [--port P]`: Model Explorer's server on 127.0.0.1, able to load zoo's .pt2 programs.

Model Explorer's own `model-explorer` command cannot: our programs call zoo's custom op `zoo::filled_slots`
(zoo/architectures/layers.py), which must be registered in the process that loads them. The models and overlays
come with the page's URL (`python -m zoo.debug` prints it). The page asks for its models at once and the server
loads them in parallel threads, but torch's deserializer is one global per process ("_CURRENT_DESERIALIZER is
already set"): here loads take turns.
"""

from __future__ import annotations

import functools
import threading

import torch

import zoo.architectures.layers  # noqa: F401  registers torch.ops.zoo.filled_slots for torch.export.load
from zoo.errors import Arguments


def _one_at_a_time(load):
    lock = threading.Lock()

    @functools.wraps(load)
    def locked(*args, **kwargs):
        with lock:
            return load(*args, **kwargs)

    return locked


def main(argv: list[str] | None = None) -> None:
    import model_explorer

    parser = Arguments(prog="python -m zoo.debug.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    args = parser.parse_args(argv)
    torch.export.load = _one_at_a_time(torch.export.load)  # what Model Explorer's PyTorch adapter calls
    model_explorer.visualize_from_config(None, host="127.0.0.1", port=args.port, no_open_in_browser=True)


if __name__ == "__main__":
    import sys

    from zoo.quiet import guarded

    sys.exit(guarded("zoo.debug.serve", lambda: main(sys.argv[1:]), sys.argv[1:]))
