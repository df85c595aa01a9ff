"""`python -m zoo.eval FILE.tflite [key=value ...]`: evaluate any exported flatbuffer.

The entry, recipe and export settings are the run's own, read from the report.json next to the file; overrides
(e.g. `eval.ctx=256`, `eval.text=PATH`, `quant.eval.max_kld=0.01`) change that config. Prints the eval line and
records the section as `eval` in that report.json (nothing is written when the eval cannot run); exit status 2 on
bad input or a missed bound (zoo/errors.py).

A file with no report.json beside it (one zoo did not make, or moved) is scored against the config the overrides
compose, as `python -m zoo` would: `model=` names the entry whose tokenizer and transformers reference it is compared
with (e.g. `python -m zoo.eval model.tflite model=smollm2_135m export.kv_layout=transposed`); nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.checkpoint import resolve
from zoo.checkpoint.tokenizer import load_tokenizer
from zoo.config import compose_config, validate
from zoo.errors import ConfigError, EvalError, EvalFailed, InputError
from zoo.eval.stage import eval_line, run_eval
from zoo.files import write_atomic
from zoo.kinds import kind_of, problems
from zoo.quiet import exit_quietly, guarded
from zoo.schema import ZooConfig


def run_config(path: Path, overrides: list[str]) -> tuple[ZooConfig, dict | None]:
    """The config the flatbuffer was made with (its report's), with `overrides` applied, and that report; without a
    report beside the file, the config `overrides` compose (and None)."""
    if not path.is_file():
        raise EvalError(f"{path}: no such flatbuffer")
    report_path = path.parent / "report.json"
    if not report_path.is_file():
        return compose_config(overrides, problems), None
    report = json.loads(report_path.read_text())
    if "config" not in report:
        raise EvalError(f"{report_path}: has no resolved config")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ZooConfig), report["config"], OmegaConf.from_dotlist(overrides))
        cfg: ZooConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"override: {str(err).splitlines()[0]}") from None
    validate(cfg, str(report_path), problems)
    return cfg, report


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if not argv or argv[0].startswith("-"):
        raise InputError(
            f"{argv[0] if argv else 'no flatbuffer given'}: usage: python -m zoo.eval FILE.tflite [key=value ...]"
        )
    path = Path(argv[0])
    cfg, saved = run_config(path, argv[1:])
    checkpoint = resolve(cfg.model.checkpoint, cfg.model.reference, cfg.seed)
    evaluated = run_eval(cfg, kind_of(cfg), path, checkpoint, load_tokenizer(cfg.model.tokenizer, checkpoint))
    if saved is not None:  # measured (within bounds or not): recorded in the run's report
        saved["eval"] = evaluated.section()
        write_atomic(path.parent / "report.json", json.dumps(saved, indent=2, default=str) + "\n")
    print(eval_line(evaluated.section()))
    if evaluated.failure:
        raise EvalFailed(evaluated.failure)
    return 0


if __name__ == "__main__":
    exit_quietly(guarded("zoo.eval", lambda: main(sys.argv[1:]), sys.argv[1:]))
