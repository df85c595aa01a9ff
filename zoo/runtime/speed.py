"""How fast a flatbuffer runs in our runtime and in LiteRT-LM: the timings behind the `bench` stage and a CLI.

Each signature is timed two ways:
- invoke only: a run of the signature on the inputs already written (caches aliased in place): the kernels alone;
- loop: a full step of the generate loop (tokens, positions and mask written, run, for decode the logits read and
  the greedy pick).
The bare run is timed right after each loop step on the inputs that step wrote: the same work (for decode the same
position, as positions advance as in generation, so both read the same number of cache slots), and machine noise
hits both alike. Figures are medians after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from zoo.errors import Arguments, InputError
from zoo.progress import progress
from zoo.runtime.model import LiteModel
from zoo.schema import KVLayout


def _paired(model: LiteModel, signature: str, steps, warmup: int, desc: str) -> tuple[float, float, int]:
    """Median seconds of each of `steps` (our loop's steps) and of the bare run right after it, past `warmup`."""
    loop, invoke = [], []
    for i, step in enumerate(progress(steps, desc)):
        begin = time.perf_counter()
        step()
        middle = time.perf_counter()
        model.invoke_only(signature)
        if i >= warmup:
            loop.append(middle - begin)
            invoke.append(time.perf_counter() - middle)
    return statistics.median(loop), statistics.median(invoke), len(loop)


def prefill_speed(model: LiteModel, tokens: list[int], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of the prefill signature of len(tokens) from position 0: our step and the bare invoke."""
    t = len(tokens)
    sig = f"prefill_{t}"
    steps = [lambda: model.step(sig, tokens, 0, logits=False)] * (warmup + repeats)
    loop_s, invoke_s, _ = _paired(model, sig, steps, warmup, f"bench {sig}")
    return {"tokens": t, "invoke_s": invoke_s, "loop_s": loop_s, "invoke_tok_s": t / invoke_s, "loop_tok_s": t / loop_s}


def decode_speed(model: LiteModel, tokens: list[int], start: int, warmup: int) -> dict[str, float]:
    """Median seconds per decode step of our loop and of the bare invoke at the same positions (start, start+1, ...).

    The first `warmup` tokens are run untimed. `ratio` is loop over invoke: the loop's own overhead.
    """
    steps = [
        lambda i=i, token=token: int(np.argmax(model.step("decode", [token], start + i)[0, -1]))
        for i, token in enumerate(tokens)
    ]
    loop_s, invoke_s, n = _paired(model, "decode", steps, warmup, "bench decode")
    return {
        "start_position": start,
        "steps": n,
        "invoke_s": invoke_s,
        "loop_s": loop_s,
        "invoke_tok_s": 1 / invoke_s,
        "loop_tok_s": 1 / loop_s,
        "ratio": loop_s / invoke_s,
    }


def litert_lm_speed(bundle: str, prefill_tokens: int, decode_tokens: int, threads: int = 2) -> dict[str, float]:
    """LiteRT-LM's own benchmark of a .litertlm bundle (prefill and decode tokens/s) on the CPU backend."""
    import litert_lm

    info = litert_lm.Benchmark(
        model_path=bundle,
        backend=litert_lm.Backend.CPU(thread_count=threads),
        prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens,
    ).run()
    return {"prefill_tps": info.last_prefill_tokens_per_second, "decode_tps": info.last_decode_tokens_per_second}


def litert_lm_compare(
    bundles: list[str], rounds: int, prefill_tokens: int = 128, decode_tokens: int = 128
) -> dict[str, dict]:
    """LiteRT-LM's benchmark of several bundles in alternating rounds (noise hits each alike): medians and ranges."""
    runs: dict[str, list[dict]] = {b: [] for b in bundles}
    for _ in progress(range(rounds), "litert-lm rounds"):
        for b in bundles:
            runs[b].append(litert_lm_speed(b, prefill_tokens, decode_tokens))
    return {
        b: {
            key: {
                "median": statistics.median(r[key] for r in rs),
                "min": min(r[key] for r in rs),
                "max": max(r[key] for r in rs),
            }
            for key in ("prefill_tps", "decode_tps")
        }
        for b, rs in runs.items()
    }


def main(argv: list[str]) -> None:

    parser = Arguments(
        prog="python -m zoo.runtime.speed",
        description=(
            "FILE.tflite LAYOUT: our loop against the bare runs (prefill and decode). "
            "A.litertlm [B.litertlm ...]: LiteRT-LM's own benchmark of each bundle, in alternating rounds."
        ),
    )
    parser.add_argument("files", nargs="+", help="FILE.tflite btnh|transposed, or .litertlm bundles")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds of the LiteRT-LM benchmark")
    parser.add_argument("--decode-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    if missing := [f for f in args.files if f.endswith((".tflite", ".litertlm")) and not Path(f).is_file()]:
        raise InputError(f"no such file: {', '.join(missing)}")
    if all(f.endswith(".litertlm") for f in args.files):
        for bundle, stats in litert_lm_compare(args.files, args.rounds, decode_tokens=args.decode_tokens).items():
            print(bundle, " ".join(f"{k} {v['median']:.1f} [{v['min']:.1f}-{v['max']:.1f}]" for k, v in stats.items()))
        return
    layouts = [k.value for k in KVLayout]
    if len(args.files) != 2 or not args.files[0].endswith(".tflite") or args.files[1] not in layouts:
        raise InputError(f"give FILE.tflite and its KV layout ({' or '.join(layouts)}), or only .litertlm bundles")
    lite = LiteModel(*args.files)
    rng = np.random.default_rng(0)
    t = lite.prefill_lens[-1]
    print("prefill", prefill_speed(lite, rng.integers(lite.vocab_size, size=t).tolist(), 3, 10))
    print("decode", decode_speed(lite, rng.integers(lite.vocab_size, size=3 + args.decode_tokens).tolist(), t, 3))


if __name__ == "__main__":
    import sys

    from zoo.quiet import exit_quietly, guarded

    exit_quietly(guarded("zoo.runtime.speed", lambda: main(sys.argv[1:]), sys.argv[1:]))
