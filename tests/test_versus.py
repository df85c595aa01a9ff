"""`python -m zoo.versus`: llama-bench's output read, the side-by-side table computed, bad input refused."""

from __future__ import annotations

import json
import statistics

import pytest

from zoo.errors import InputError
from zoo.versus import llama_bench, main, parse_llama_bench, table

# `llama-bench -m smollm2-q4_0.gguf -t 2 -p 16 -n 4 -r 1 -o json` (llama.cpp of llama-cpp-python 0.3.36), the fields
# zoo reads plus a few: one row for prompt processing, one for generation.
LLAMA_BENCH_JSON = json.dumps(
    [
        {"model_filename": "smollm2-q4_0.gguf", "n_prompt": 16, "n_gen": 0, "n_threads": 2, "avg_ts": 544.018343},
        {"model_filename": "smollm2-q4_0.gguf", "n_prompt": 0, "n_gen": 4, "n_threads": 2, "avg_ts": 139.666516},
    ]
)


def test_llama_bench_rows_become_speeds():
    assert parse_llama_bench(LLAMA_BENCH_JSON) == {"prefill_tok_s": 544.018343, "decode_tok_s": 139.666516}


def test_table_gives_medians_ranges_ratios_and_the_bound():
    decode = {"q.gguf": [100.0, 120.0, 110.0], "z.tflite": [150.0, 130.0, 165.0]}
    result = {
        "rounds": 3,
        "prompt": 128,
        "gen": 128,
        "threads": 2,
        "read_bytes_per_s": [20e9, 30e9, 25e9],
        "files": {
            name: {
                "bytes": size,
                "rounds": [{"decode_tok_s": d, "prefill_tok_s": 10 * d} for d in decode[name]],
            }
            for name, size in (("q.gguf", 100e6), ("z.tflite", 125e6))
        },
    }
    text = table(result)
    assert "read bandwidth 25.0 GB/s" in text
    assert "| q.gguf | 100.0 | 110.0 [100.0-120.0] | 1100.0 [1000.0-1200.0] | 0.44 |" in text  # 110 / (25e9 / 1e8)
    ratio = statistics.median(decode["z.tflite"]) / statistics.median(decode["q.gguf"])
    assert f"| z.tflite | {ratio:.2f}x, {ratio:.2f}x |" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a.tflite", "--gguf", "q.gguf"], "--gguf needs --llama-bench PATH"),
        (["a.tflite", "--llama-bench", "/no/such/llama-bench"], "no such file; give the path of a built llama-bench"),
        (["/no/such.tflite"], "no such file: /no/such.tflite"),
    ],
)
def test_bad_input_is_one_line(argv, message):
    with pytest.raises(InputError, match=message):
        main(argv)


def test_a_gguf_in_the_flatbuffer_list_is_refused(tmp_path):
    gguf = tmp_path / "q.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(InputError, match=r"not a \.tflite: .*q\.gguf \(GGUF files go after --gguf\)"):
        main([str(gguf)])


def test_a_binary_that_is_not_llama_bench_is_one_line(tmp_path):
    text = tmp_path / "llama-bench"
    text.write_text("not a program")
    with pytest.raises(InputError, match="cannot run it"):
        llama_bench(str(text), "q.gguf", 16, 4, 2)
    echo = tmp_path / "echo-bench"
    echo.write_text("#!/bin/sh\necho hello\n")
    echo.chmod(0o755)
    with pytest.raises(InputError, match="no `-o json` results"):
        llama_bench(str(echo), "q.gguf", 16, 4, 2)
