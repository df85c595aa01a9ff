"""`python -m zoo [group=option ...] [key=value ...]`: compose the config, run the pipeline, print a summary.

Groups: model= (conf/model/), quant= (conf/quant/), export= (conf/export/). `--cfg job` prints the composed
config; `-m` sweeps; `hydra.run.dir=DIR` chooses where report.json and config.yaml go.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.bundle import BundleError
from zoo.checkpoint import CheckpointError, MappingError
from zoo.config import ConfigError, composition_error, load
from zoo.pipeline import CheckFailed, GateFailed, check_line, gate_line, run
from zoo.report import write_atomic

USER_ERRORS = (ConfigError, CheckpointError, MappingError, GateFailed, CheckFailed, BundleError)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        zoo_cfg = load(cfg, dict(hc.runtime.choices))
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(zoo_cfg)))
        report = run(zoo_cfg, run_dir)
    except USER_ERRORS as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{report['model']}: {report['num_params'] / 1e6:.1f}M parameters from {report['checkpoint']}")
    print(gate_line(report["golden"]))
    if "export" in report.data:
        exp, chk = report["export"], report["check"]
        print(f"export: {exp['path']} ({exp['size_bytes'] / 1e6:.1f} MB, {', '.join(exp['signatures'])}) in "
              f"{exp['convert_seconds']:.0f} s, peak RSS {exp['convert_peak_rss_bytes'] / 2**30:.2f} GiB")
        print(check_line(chk))
    for kind, made in report.data.get("bundles", {}).items():
        print(f"bundle {kind}: {made['path']} ({made['size_bytes'] / 1e6:.1f} MB)")
    print(f"report: {report.path}")


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
