"""`python -m zoo [group=option ...] [key=value ...]`: compose the config, run the pipeline, print a summary.

Groups: model= (zoo/conf/model/), quant= (zoo/conf/quant/), export= (zoo/conf/export/); your own YAML files in
./conf/<group>/ join them. `--cfg job` prints the composed config; `-m` sweeps; `hydra.run.dir=DIR` chooses where
report.json and config.yaml go.

In a sweep (`-m`) a job that fails, for any reason, is recorded as failed in its report.json and the sweep goes
on: Hydra's sweeper re-raises the first failed job's exception after its batch and skips the summary callback, so
jobs return their status instead of raising. A sweep rerun in the same folder (`hydra.sweep.dir`) skips the jobs
that finished with the same config and whose files are as their report.json records them, and runs the rest.
A single run ends in one line and exit status 2 (the user's to fix) or 1 (a bug), see zoo/errors.py; a config error
leaves no run directory behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo import kinds
from zoo.config import composition_error, load
from zoo.errors import ConfigError, ResourceError, as_user_error
from zoo.eval import eval_line
from zoo.files import remove_stale, write_atomic
from zoo.jobcache import JobCache
from zoo.pipeline import check_line, preflight, run
from zoo.quiet import exit_quietly, guarded, quiet_python_logs
from zoo.report import Report, unfinished
from zoo.results import Gate

CACHE = JobCache()  # shared by the jobs this process runs (the basic launcher runs a whole sweep here)
log = logging.getLogger("zoo")
# A single run's failure, raised again by compose_and_run once Hydra has returned: raised through Hydra, it is
# preceded by Hydra's own "Error executing job with overrides" line.
FAILURE: list[BaseException] = []


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    quiet_python_logs()
    try:
        zoo_cfg = load(cfg, dict(hc.runtime.choices), kinds.problems)
        preflight(zoo_cfg)
    except (ConfigError, ResourceError) as err:
        if hc.mode != RunMode.MULTIRUN:
            remove_hydra_record(run_dir, hc.job.name)
            FAILURE.append(err)
            return "failed"
        return job_failed(run_dir, err)
    if hc.mode == RunMode.MULTIRUN and job_reused(run_dir, zoo_cfg):
        return "ok"
    try:
        remove_stale(run_dir)  # left by a run killed mid-write
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(zoo_cfg)))
        report = run(zoo_cfg, run_dir, CACHE)
    except BaseException as err:
        if hc.mode != RunMode.MULTIRUN:
            FAILURE.append(err)
            return "failed"
        if not isinstance(err, Exception):
            raise
        return job_failed(run_dir, err)
    print(f"{report['model']}: {report['num_params'] / 1e6:.1f}M parameters from {report['checkpoint']}")
    print(report.results[Gate].result.line())
    if "export" in report.data:
        exp, chk = report["export"], report["check"]
        print(
            f"export: {exp['path']} ({exp['size_bytes'] / 1e6:.1f} MB, {', '.join(exp['signatures'])}) in "
            f"{exp['convert_seconds']:.0f} s, peak RSS {exp['convert_peak_rss_bytes'] / 2**30:.2f} GiB"
        )
        print(check_line(chk))
    if "eval" in report.data:
        print(eval_line(report["eval"]))
    for kind, made in report.data.get("bundles", {}).items():
        print(f"bundle {kind}: {made['path']} ({made['size_bytes'] / 1e6:.1f} MB)")
    if "bench" in report.data:
        b = report["bench"]
        prefill = ", ".join(f"{t}: {v:.0f}" for t, v in b["prefill_tok_s"].items())
        print(
            f"bench: prefill tok/s {prefill}; decode {b['decode_tok_s']:.1f} tok/s invoke only "
            f"({b['decode_loop_tok_s']:.1f} in the generate loop: {b['decode_loop_over_invoke'] - 1:+.1%}; "
            f"{b['bandwidth']['decode_fraction_of_bound']:.0%} of the bandwidth bound); TTFT "
            f"{b['ttft_s'] * 1e3:.1f} ms; runtime peak RSS {b['runtime_peak_rss_bytes'] / 2**20:.0f} MiB"
        )
    print(f"report: {report.path}")
    return "ok"


def remove_hydra_record(run_dir: Path, job_name: str) -> None:
    """Undo what Hydra made before the config was found invalid (`.hydra/`, the job's log), and the run directory
    itself if that leaves it empty: a rejected config leaves nothing behind, and nothing else is touched."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for name in (f"{job_name}.log", "config.yaml"):
        (run_dir / name).unlink(missing_ok=True)
    cwd, run_dir = Path.cwd().resolve(), run_dir.resolve()
    inside = [f for f in run_dir.parents if cwd in f.parents]  # the default's runs/<model>/, made by Hydra too
    for folder in [run_dir, *inside]:
        with contextlib.suppress(OSError):  # not empty: someone's
            folder.rmdir()


def job_reused(run_dir: Path, cfg) -> bool:
    """A job of a rerun sweep that need not run again: its report.json says `ok` for this very config and its files
    still have their recorded sizes and hashes."""
    config = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    if unfinished(run_dir, config) is not None:
        return False
    print(f"job reused: {run_dir} (finished with this config; its files are as report.json records them)", flush=True)
    return True


def job_failed(run_dir: Path, err: Exception) -> str:
    """A failed sweep job: one line (a traceback in the job's log for an unexpected error) and a report.json
    saying `failed` (run() writes its own; a config error stops before it)."""
    if as_user_error(err) is not None:
        log.error("job failed: %s", err)
    else:
        log.exception("job failed: %s: %s", type(err).__name__, err)
    if not (run_dir / "report.json").exists():
        Report(run_dir / "report.json").finish(err)
    return "failed"


def compose_and_run() -> None:
    """Hydra re-raises composition errors (HYDRA_FULL_ERROR) so they can be shown as one line."""
    if "--version" in sys.argv[1:]:  # zoo's, not Hydra's
        from zoo.cli import version

        print(version())
        return
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except (HydraException, OmegaConfBaseException) as err:
        raise composition_error(err, sys.argv[1:]) from None
    except ValueError as err:  # Hydra's log file refused (read-only run dir): logging's "Unable to configure handler"
        if isinstance(err.__cause__, OSError):
            raise err.__cause__ from None
        if str(err).startswith("Only one of --run"):  # Hydra's own check of its flags (e.g. -m with --cfg)
            raise ConfigError(f"command line: {err}") from None
        raise
    if FAILURE:
        raise FAILURE.pop()


def cli() -> None:
    exit_quietly(guarded("zoo", compose_and_run, sys.argv[1:]))


if __name__ == "__main__":
    cli()
