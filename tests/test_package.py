"""zoo as an installed package: a wheel in a fresh venv runs from an empty folder, with its config tree inside."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # a wheel into a fresh venv


def test_wheel_runs_from_an_empty_folder(tmp_path):
    """Built from a copy of the sources, installed with --no-deps into a fresh venv that borrows the project venv's
    third-party packages through a .pth (quick; the editable install of the checkout is not seen): `--cfg job`,
    a small run and a user's own ./conf entry all work from a folder that holds nothing of zoo."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "zoo", src / "zoo", ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src], check=True)
    wheel = next((tmp_path / "dist").glob("zoo-*.whl"))
    assert {
        "zoo/conf/config.yaml",
        "zoo/conf/model/smollm2_135m.yaml",
        "zoo/conf/new/llama.yaml",
        "zoo/web/page/index.html",
    } <= set(zipfile.ZipFile(wheel).namelist())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (venv / site / "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "empty"
    (work / "conf" / "model").mkdir(parents=True)
    (work / "conf" / "model" / "mine.yaml").write_text(
        (ROOT / "zoo" / "conf" / "model" / "tinyllama.yaml").read_text().replace("name: tinyllama", "name: mine")
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "ZOO_CACHE": str(tmp_path / "cache")}

    def zoo(*args):
        return subprocess.run(
            [python, "-m", "zoo", *args], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )

    where = subprocess.run(
        [python, "-c", "import zoo; print(zoo.__file__)"], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    job = zoo("--cfg", "job")
    assert job.returncode == 0 and "name: smollm2_135m" in job.stdout, job.stderr
    mine = zoo("model=mine", "--cfg", "job")
    assert mine.returncode == 0 and "name: mine" in mine.stdout, mine.stderr
    run = zoo("model=mine", "variant=small", "export.prefill_lens=[16]", "export.kv_cache_max=64", "hydra.run.dir=run")
    assert run.returncode == 0 and "check PASS" in run.stdout, run.stderr
    assert (work / "run" / "mine_none_kv64.tflite").is_file()
