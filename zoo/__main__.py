"""`python -m zoo [group=option ...] [key=value ...]`: compose the config, run the pipeline, print a summary.

Groups: model= (conf/model/), quant= (conf/quant/), export= (conf/export/). `--cfg job` prints the composed
config; `-m` sweeps; `hydra.run.dir=DIR` chooses where report.json and config.yaml go.

In a sweep (`-m`) a job that fails, for any reason, is recorded as failed in its report.json and the sweep goes
on: Hydra's sweeper re-raises the first failed job's exception after its batch and skips the summary callback, so
jobs return their status instead of raising. A single run still exits 1 with one line.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.bundle import BundleError
from zoo.checkpoint import CheckpointError, MappingError
from zoo.config import ConfigError, composition_error, load
from zoo.eval import EvalError, EvalFailed, eval_line
from zoo.jobcache import JobCache
from zoo.pipeline import CheckFailed, GateFailed, check_line, gate_line, run
from zoo.report import Report, write_atomic

USER_ERRORS = (ConfigError, CheckpointError, MappingError, GateFailed, CheckFailed, BundleError, EvalError, EvalFailed)
CACHE = JobCache()  # shared by the jobs this process runs (the basic launcher runs a whole sweep here)
log = logging.getLogger("zoo")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        zoo_cfg = load(cfg, dict(hc.runtime.choices))
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(zoo_cfg)))
        report = run(zoo_cfg, run_dir, CACHE)
    except Exception as err:
        if hc.mode != RunMode.MULTIRUN:
            if not isinstance(err, USER_ERRORS):
                raise
            print(f"zoo: error: {err}", file=sys.stderr)
            sys.exit(1)
        return job_failed(run_dir, err)
    print(f"{report['model']}: {report['num_params'] / 1e6:.1f}M parameters from {report['checkpoint']}")
    print(gate_line(report["golden"]))
    if "export" in report.data:
        exp, chk = report["export"], report["check"]
        print(f"export: {exp['path']} ({exp['size_bytes'] / 1e6:.1f} MB, {', '.join(exp['signatures'])}) in "
              f"{exp['convert_seconds']:.0f} s, peak RSS {exp['convert_peak_rss_bytes'] / 2**30:.2f} GiB")
        print(check_line(chk))
    if "eval" in report.data:
        print(eval_line(report["eval"]))
    for kind, made in report.data.get("bundles", {}).items():
        print(f"bundle {kind}: {made['path']} ({made['size_bytes'] / 1e6:.1f} MB)")
    if "bench" in report.data:
        b = report["bench"]
        prefill = ", ".join(f"{t}: {v:.0f}" for t, v in b["prefill_tok_s"].items())
        print(f"bench: prefill tok/s {prefill}; decode {b['decode_tok_s']:.1f} tok/s invoke only "
              f"({b['decode_loop_tok_s']:.1f} in the generate loop: {b['decode_loop_over_invoke'] - 1:+.1%}; "
              f"{b['bandwidth']['decode_fraction_of_bound']:.0%} of the bandwidth bound); TTFT "
              f"{b['ttft_s'] * 1e3:.1f} ms; runtime peak RSS {b['runtime_peak_rss_bytes'] / 2**20:.0f} MiB")
    print(f"report: {report.path}")
    return "ok"


def job_failed(run_dir: Path, err: Exception) -> str:
    """A failed sweep job: one line (a traceback in the job's log for an unexpected error) and a report.json
    saying `failed` (run() writes its own; a config error stops before it)."""
    if isinstance(err, USER_ERRORS):
        log.error("job failed: %s", err)
    else:
        log.exception("job failed: %s: %s", type(err).__name__, err)
    if not (run_dir / "report.json").exists():
        report = Report(run_dir / "report.json")
        report["status"], report["error"] = "failed", f"{type(err).__name__}: {err}"
        report.write()
    return "failed"


def cli() -> None:
    """Hydra re-raises composition errors (HYDRA_FULL_ERROR) so they can be shown as one line, exit status 1."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except (HydraException, OmegaConfBaseException) as err:
        print(f"zoo: error: {composition_error(err, sys.argv[1:])}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
