"""`python -m zoo.debug [group=option ...] [key=value ...]`: where does the flatbuffer leave PyTorch?

The main command's config and overrides (docs/debug.md). Loads and gates the model, exports the flatbuffer into
the run folder (`debug.dir` or `hydra.run.dir`, default runs/<model>/debug-<time>), runs the post-export check
(reported, not fatal), then the divergence finder: a table of the nodes adding the most error and the first node
past the recipe's bounds, per-op blame for `debug.blame` suspects, debug.json and report.json in the run folder,
Model Explorer overlays of the flatbuffer and of the torch.export programs; `debug.serve=true` serves them.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from zoo.config import compose_config
from zoo.quiet import exit_quietly, guarded


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    from zoo import kinds, pipeline

    cfg = compose_config(argv, kinds.problems)
    pipeline.preflight(cfg)
    asked = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), None)  # as python -m zoo
    run_dir = Path(cfg.debug.dir or asked or f"runs/{cfg.model.name}/debug-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    report = pipeline.run(cfg, run_dir, debug_anyway=True)
    checked = report["check"]
    print(pipeline.check_line(checked) if checked["passed"] else f"check FAIL: {'; '.join(checked['failures'])}")
    seconds = report["timings"]["debug"]["seconds"]
    print(f"debug: {run_dir / 'debug.json'} in {seconds:.0f} s; report: {report.path}")
    show(report["debug"]["explorer"]["url"], cfg.debug.serve, cfg.debug.port)
    return 0


def show(url: str, serve: bool, port: int) -> None:
    """Model Explorer on both graphs and overlays: started here until Ctrl-C (`debug.serve=true`), or the command
    line and page that would show them."""
    from zoo.debug.explorer import server_command, start_server

    if not serve:
        command = shlex.join(["python", *server_command(port)[1:]])
        print(f"Model Explorer (or debug.serve=true): {command}\nthen open: {url}")
        return
    server = start_server(port)
    print(f"Model Explorer: {url}\n(Ctrl-C stops it)", flush=True)
    try:
        server.wait()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    exit_quietly(guarded("zoo.debug", lambda: main(sys.argv[1:]), sys.argv[1:]))
