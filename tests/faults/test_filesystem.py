"""Category 4, the file system: read-only run directories and artifact caches, a disk that fills up during the export,
a file size limit, cached artifacts truncated or edited after they were written, and two runs filling the same cache
entry at once. Each ends in one line naming the file and the fix (exit status 2), or in a correct result, with nothing
half-written left and nothing earlier lost.

The file systems are real: tmpfs mounts (a small one fills up) and read-only bind mounts; the suite runs as root.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faults.harness import (
    SMALL,
    assert_nothing_partial,
    assert_user_error,
    entry,
    env_for,
    finish,
    generate_args,
    output,
    run,
    snapshot,
    start,
    wait_until,
)
from zoo.files import changed

pytestmark = pytest.mark.slow  # each case a real command in a subprocess

TFLITE = "tinyllama_none_kv64.tflite"


@contextlib.contextmanager
def mount(target: Path, *, size: str | None = None, read_only_copy_of: Path | None = None):
    """`target` as a tmpfs of `size`, or as a read-only bind mount of `read_only_copy_of`; unmounted afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    if size:
        commands = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]]
    else:
        commands = [
            ["mount", "--bind", str(read_only_copy_of), str(target)],
            ["mount", "-o", "remount,bind,ro", str(target)],
        ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory, tiny_tokenizer) -> Path:
    """An artifact cache with one complete entry, made by `python -m zoo.generate`; cases copy it."""
    base = tmp_path_factory.mktemp("cache")
    (base / "cwd").mkdir()
    result = run("zoo.generate", *generate_args(tiny_tokenizer, base / "artifacts"), cwd=base / "cwd")
    assert result.returncode == 0, result.stderr
    return base / "artifacts"


def pipeline_runs(stderr: str) -> int:
    return stderr.count("running the pipeline")


@pytest.mark.parametrize("earlier", [False, True], ids=["new_run_dir", "finished_run_dir"])
def test_read_only_run_dir(tmp_path, small_run, earlier):
    """A run directory on a read-only file system: refused in one line; a finished run there stays as it was."""
    source = tmp_path / "source"
    if earlier:
        shutil.copytree(small_run, source)
    else:
        source.mkdir()
    with mount(tmp_path / "ro", read_only_copy_of=source) as ro:
        run_dir = ro if earlier else ro / "run"
        before = snapshot(ro)
        result = run("zoo", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert_user_error(result, "storage", "read-only file system", str(run_dir), "writable")
        assert snapshot(ro) == before


def test_disk_full_during_export_keeps_the_earlier_flatbuffer(tmp_path, small_run):
    """A rerun into a finished run directory on a disk with room for the first flatbuffer but not for a second:
    one `no space left` line, the earlier flatbuffer untouched, no temp files filling the disk."""
    with mount(tmp_path / "disk", size="1m") as disk:
        run_dir = disk / "run"
        shutil.copytree(small_run, run_dir)
        earlier = snapshot(run_dir)[str(run_dir / TFLITE)]
        result = run("zoo", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert_user_error(result, "storage", "no space left", str(run_dir), "free some space")
        assert_nothing_partial(run_dir)
        assert snapshot(run_dir)[str(run_dir / TFLITE)] == earlier
        report = json.loads((run_dir / "report.json").read_text())
        assert report["status"] == "failed" and "No space left" in report["error"]


def test_disk_too_small_for_the_random_weights(tmp_path):
    """`model.checkpoint=random` writes its snapshot into the cache; a disk too small for it is refused before
    writing, in one line with the size needed and the disk's free space; nothing is left there."""
    with mount(tmp_path / "disk", size="256k") as disk:
        result = run("zoo", *SMALL, f"cache_dir={disk}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        assert_user_error(result, "resources", "snapshot needs", "MB free", str(disk), "cache_dir=")
        assert [p for p in disk.rglob("*") if p.is_file()] == []


def test_file_size_limit(tmp_path):
    """`ulimit -f` below the flatbuffer's size (EFBIG, with SIGXFSZ ignored as shells do not): one line naming
    the limit, no temp file left."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "zoo", *SMALL, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=env_for(tmp_path / "home"),
        preexec_fn=limit,
        check=False,
    )
    assert_user_error(result, "storage", "file too large", str(run_dir), "ulimit -f")
    assert_nothing_partial(run_dir)
    assert not (run_dir / TFLITE).exists()


def test_read_only_cache_without_the_entry(tmp_path, tiny_tokenizer):
    (tmp_path / "empty").mkdir()
    with mount(tmp_path / "ro", read_only_copy_of=tmp_path / "empty") as ro:
        result = run("zoo.generate", *generate_args(tiny_tokenizer, ro), cwd=tmp_path)
        assert_user_error(result, "storage", "read-only file system", str(ro), "writable")
        assert snapshot(ro) == {}


def test_read_only_cache_with_the_entry_is_used(tmp_path, tiny_tokenizer, filled_cache):
    """A complete entry needs no writing (no lock either): generation works from a read-only cache."""
    with mount(tmp_path / "ro", read_only_copy_of=filled_cache) as ro:
        before = snapshot(ro)
        result = run("zoo.generate", *generate_args(tiny_tokenizer, ro), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert pipeline_runs(result.stderr) == 0 and TFLITE in result.stdout
        assert snapshot(ro) == before


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage", "reason"),
    [
        (TFLITE, truncate, "bytes, recorded"),
        (TFLITE, flip_a_byte, "not the recorded sha256"),
        ("report.json", truncate, "report.json"),
    ],
    ids=["truncated_flatbuffer", "edited_flatbuffer", "truncated_report"],
)
def test_changed_cache_entry_is_rebuilt(tmp_path, tiny_tokenizer, filled_cache, name, damage, reason):
    """A cached file changed after it was written is caught by its recorded size and sha256 (or an unreadable
    report): one line says which file and why, the entry is exported again and then matches its record."""
    cache = tmp_path / "artifacts"
    shutil.copytree(filled_cache, cache)
    damage(entry(cache) / name)
    result = run("zoo.generate", *generate_args(tiny_tokenizer, cache), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    notes = [line for line in result.stderr.splitlines() if "exporting it again" in line]
    assert len(notes) == 1 and str(entry(cache) / name) in notes[0] and reason in notes[0], result.stderr
    report = json.loads((entry(cache) / "report.json").read_text())
    assert report["status"] == "ok" and changed(entry(cache) / TFLITE, report["export"]) is None
    assert_nothing_partial(cache)


def test_two_runs_filling_one_cache_entry(tmp_path, tiny_tokenizer):
    """The first run holds the entry's lock (stopped at its check, SIGSTOP by the test hook); the second waits for
    it, then uses its export: one pipeline run, two generations from the same flatbuffer."""
    cache = tmp_path / "artifacts"
    first = start("zoo.generate", *generate_args(tiny_tokenizer, cache), cwd=tmp_path, ZOO_FAULT_AT="check:STOP")
    try:
        wait_until(
            lambda: first.poll() is None and Path(f"/proc/{first.pid}/stat").read_text().split()[2] == "T",
            first,
            "the first run stopped in its check",
        )
        second = start("zoo.generate", *generate_args(tiny_tokenizer, cache), cwd=tmp_path)
        wait_until(lambda: "waiting for another process" in output(second)[1], second, "the second run waiting")
    finally:
        first.send_signal(signal.SIGCONT)
    results = [finish(first), finish(second)]
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert [pipeline_runs(r.stderr) for r in results] == [1, 0]
    assert all(TFLITE in r.stdout for r in results)
    report = json.loads((entry(cache) / "report.json").read_text())
    assert changed(entry(cache) / TFLITE, report["export"]) is None
    assert_nothing_partial(cache)
