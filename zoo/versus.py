"""`python -m zoo.versus FILE.tflite ... [--llama-bench BIN --gguf A.gguf ...]`: zoo's flatbuffers and llama.cpp's
GGUF files timed side by side, in alternating rounds on the same machine, as llama.cpp's own `llama-bench` counts.

Each round times every file once: a GGUF with `llama-bench -p P -n G -r 1` (prompt processing of P tokens, then G
tokens generated from an empty context), a flatbuffer with the bench stage's child process (zoo/bench.py: prefill
signature `prefill_P` from position 0, then G decode steps from position 0, invoke-only medians). Noise then hits
every file alike; the table gives each figure's median and range over the rounds, the ratios of medians, and
decode as a fraction of the bandwidth bound (read bandwidth measured each round / file bytes). The project neither
ships nor builds llama.cpp: give the path of a `llama-bench` you built (docs/benchmarks.md says how).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from zoo.bench import bench_child, bench_spec, read_bandwidth
from zoo.errors import Arguments, InputError
from zoo.files import write_atomic
from zoo.progress import progress
from zoo.quiet import exit_quietly, guarded
from zoo.runtime.model import LiteModel
from zoo.schema import KVLayout

WARMUP = 3  # untimed decode steps and prefill calls before each file's timed ones


def llama_bench(binary: str, gguf: str, prompt: int, gen: int, threads: int) -> dict[str, float]:
    """One `llama-bench` run of `gguf`: prefill and decode tokens/s."""
    cmd = [binary, "-m", gguf, "-t", str(threads), "-p", str(prompt), "-n", str(gen), "-r", "1", "-o", "json"]
    # its own session, as the bench stage's child: the same scheduling group on either side
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, start_new_session=True)
    except OSError as err:
        raise InputError(f"--llama-bench {binary}: cannot run it ({err.strerror}): give a built llama-bench") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"llama-bench failed on {gguf} (exit {done.returncode}): {last}")
    try:
        return parse_llama_bench(done.stdout)
    except (ValueError, KeyError, TypeError):
        raise InputError(f"--llama-bench {binary}: no `-o json` results in its output; is it llama.cpp's?") from None


def parse_llama_bench(stdout: str) -> dict[str, float]:
    """`llama-bench -o json`'s two rows (prompt processing: n_prompt > 0; generation: n_gen > 0) as speeds."""
    rows = json.loads(stdout)
    pick = {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in rows}
    return {"prefill_tok_s": pick["prefill"], "decode_tok_s": pick["decode"]}


def zoo_bench(path: str, layout: str, vocab: int, prompt: int, gen: int, threads: int) -> dict[str, float]:
    """One run of the bench stage's child on `path`: prefill_P and decode from position 0."""
    spec = bench_spec(path, layout, threads, vocab, [prompt], gen, 0, WARMUP, 10)
    out = bench_child(spec)
    return {"prefill_tok_s": out["prefill"][str(prompt)]["invoke_tok_s"], "decode_tok_s": out["decode"]["invoke_tok_s"]}


def compare(
    files: list[str],
    ggufs: list[str],
    binary: str | None,
    rounds: int,
    prompt: int,
    gen: int,
    threads: int,
    layout: str,
) -> dict:
    """Alternating rounds over every file; per file its size and each round's figures."""
    vocab = {}
    for f in files:  # a file that cannot run here fails now, before any round
        lite = LiteModel(f, layout, threads, prefill_lens=[prompt])
        vocab[f] = lite.vocab_size
        lite.close()
    runs: dict[str, dict] = {f: {"bytes": Path(f).stat().st_size, "rounds": []} for f in ggufs + files}
    bandwidth = []
    for _ in progress(range(rounds), "rounds"):
        bandwidth.append(read_bandwidth(512, threads))
        for g in ggufs:
            runs[g]["rounds"].append(llama_bench(binary, g, prompt, gen, threads))
        for f in files:
            runs[f]["rounds"].append(zoo_bench(f, layout, vocab[f], prompt, gen, threads))
    return {
        "rounds": rounds,
        "prompt": prompt,
        "gen": gen,
        "threads": threads,
        "read_bytes_per_s": bandwidth,
        "files": runs,
    }


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def table(result: dict) -> str:
    """Markdown: per file its size, decode and prefill medians [ranges], decode over the bandwidth bound; then the
    ratio of every flatbuffer's medians to every GGUF's."""
    bw = statistics.median(result["read_bytes_per_s"])
    lines = [
        f"{result['rounds']} alternating rounds, {result['threads']} threads, prompt {result['prompt']}, "
        f"{result['gen']} generated; read bandwidth {bw / 1e9:.1f} GB/s (median)",
        "",
        "| file | MB | decode tok/s | prefill tok/s | decode / bandwidth bound |",
        "| --- | --- | --- | --- | --- |",
    ]
    med = {}
    for name, run in result["files"].items():
        decode = [r["decode_tok_s"] for r in run["rounds"]]
        prefill = [r["prefill_tok_s"] for r in run["rounds"]]
        med[name] = (statistics.median(decode), statistics.median(prefill))
        bound = bw / run["bytes"]
        lines.append(
            f"| {Path(name).name} | {run['bytes'] / 1e6:.1f} | {_stats(decode)} | {_stats(prefill)} | "
            f"{med[name][0] / bound:.2f} |"
        )
    ggufs = [n for n in med if n.endswith(".gguf")]
    if ggufs:
        lines += ["", "| ratio of medians (decode, prefill) | " + " | ".join(Path(g).name for g in ggufs) + " |"]
        lines.append("| --- |" + " --- |" * len(ggufs))
        for name in (n for n in med if not n.endswith(".gguf")):
            cells = [f"{med[name][0] / med[g][0]:.2f}x, {med[name][1] / med[g][1]:.2f}x" for g in ggufs]
            lines.append(f"| {Path(name).name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = Arguments(prog="python -m zoo.versus", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="zoo flatbuffers (.tflite) to time")
    parser.add_argument("--llama-bench", help="path of a llama.cpp llama-bench binary (to time --gguf files)")
    parser.add_argument("--gguf", action="append", default=[], help="a GGUF file for llama-bench (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (the flatbuffers need prefill_<this>)")
    parser.add_argument("--gen", type=int, default=128, help="generated tokens, from an empty context")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kv-layout", default=KVLayout.btnh.value, choices=[k.value for k in KVLayout])
    parser.add_argument("--out", help="also write every round's figures to this JSON file")
    args = parser.parse_args(argv)
    if args.gguf and not args.llama_bench:
        raise InputError("--gguf needs --llama-bench PATH (a llama-bench binary built from llama.cpp)")
    if args.llama_bench and not Path(args.llama_bench).is_file():
        raise InputError(f"--llama-bench {args.llama_bench}: no such file; give the path of a built llama-bench")
    if missing := [f for f in args.files + args.gguf if not Path(f).is_file()]:
        raise InputError(f"no such file: {', '.join(missing)}")
    if wrong := [f for f in args.files if not f.endswith(".tflite")]:
        raise InputError(f"not a .tflite: {', '.join(wrong)} (GGUF files go after --gguf)")
    if args.rounds < 1 or args.prompt < 1 or args.gen < 1 or args.threads < 1:
        raise InputError("--rounds, --prompt, --gen and --threads must be positive")
    result = compare(
        args.files, args.gguf, args.llama_bench, args.rounds, args.prompt, args.gen, args.threads, args.kv_layout
    )
    if args.out:
        write_atomic(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    exit_quietly(guarded("zoo.versus", lambda: main(sys.argv[1:]), sys.argv[1:]))
