"""Bad invocations of every command, as a user types them: one `<command>: error [<code>]: ...` line on stderr,
exit status 2, no traceback, nothing written, whether the command parses its line with Hydra, argparse or by hand."""

from __future__ import annotations

import pytest

from faults.harness import assert_user_error, run_warm

BAD = [
    ("zoo", ["model=nope"], "config", ["model=nope: no such option", "smollm2_135m"]),
    ("zoo", ["quant=int3"], "config", ["quant=int3: no such option", "int8_dynamic"]),
    ("zoo", ["-m", "quant=int8_dynamic", "--cfg", "job"], "config", ["command line", "only one of"]),
    ("zoo", ["export.output=model.bin"], "config", ["export.output=model.bin", "ending in .tflite"]),
    ("zoo.generate", ["model=nope"], "config", ["model=nope"]),
    ("zoo.debug", ["quant=int3"], "config", ["quant=int3"]),
    ("zoo.eval", [], "input", ["no flatbuffer given", "python -m zoo.eval FILE.tflite"]),
    ("zoo.eval", ["nope.tflite"], "eval", ["nope.tflite", "no such flatbuffer"]),
    ("zoo.summary", ["nope"], "input", ["nope", "sweep folder"]),
    ("zoo.web", ["--bogus"], "input", ["python -m zoo.web --help"]),
    ("zoo.new", ["--bogus"], "input", ["python -m zoo.new --help"]),
    ("zoo.cache", ["--bogus"], "input", ["unrecognized arguments: --bogus"]),
    ("zoo.versus", ["--bogus"], "input", ["python -m zoo.versus --help"]),
    ("zoo.runtime.speed", ["--bogus"], "input", ["--help"]),
]


@pytest.mark.parametrize(("module", "argv", "code", "fragments"), BAD, ids=[f"{m} {' '.join(a)}" for m, a, *_ in BAD])
def test_a_bad_invocation_is_one_line_exit_2(tmp_path, module, argv, code, fragments):
    result = run_warm(module, *argv, cwd=tmp_path)
    assert_user_error(result, code, *fragments)
    assert not result.stdout.strip(), result.stdout
    assert not list(tmp_path.iterdir())
