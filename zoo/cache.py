"""The export cache, one per user: `<cache root>/<model>_<quant>_kv<N>[_small]_<hash>/`, one folder per config.

    python -m zoo.cache [--clear] [DIR]    # list the entries with their sizes and state; --clear empties it

The root is `cache_dir=` when given, else `$ZOO_CACHE`, else `$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`, so
`zoo.generate` and `quant=auto` reuse an export from whatever folder they are run. The hash covers everything that
shapes the flatbuffer (model, quant, export, variant, seed, golden), not the generate, debug or eval sections, a
recipe's eval bounds, threads nor the cache's own place, so any prompt or sampling setting reuses the same export. A
folder counts only once its report.json says `ok` and the flatbuffer still has the size and sha256 recorded there (the
pipeline writes the flatbuffer atomically and the report last); a truncated or edited one is exported again. A
complete folder is read without writing anything, so a read-only cache works; filling one holds its lock
(zoo/files.py), so a second process asking for the same export waits and then uses it. The tokenizer is saved next to
it (`tokenizer/`) so later runs skip the slow GGUF tokenizer conversion.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from zoo.artifacts import artifact_dir
from zoo.checkpoint.tokenizer import checkpoint_file, tokenizer_from
from zoo.errors import Arguments, InputError
from zoo.files import atomic_path, cache_root, locked, remove, remove_stale, write_atomic
from zoo.quiet import exit_quietly, guarded, stages_logged_to
from zoo.report import unfinished
from zoo.runtime.generate import Generator
from zoo.runtime.model import LiteModel
from zoo.runtime.tokenizer import special_ids
from zoo.schema import ZooConfig


def ensure_export(cfg: ZooConfig, log=print) -> Path:
    """The flatbuffer for `cfg`: from the cache, else made by the main pipeline (golden gate, export, check)."""
    from zoo.pipeline import artifact_path

    folder = artifact_dir(cfg)
    if unfinished(folder) is None:
        return artifact_path(cfg, folder)
    with locked(folder, log):
        why = unfinished(folder)  # None: another process made it while this one waited for the lock
        if why is not None:
            from zoo.pipeline import run

            remove_stale(folder)
            if (folder / "report.json").exists():
                log(f"{why}: exporting it again (golden gate, export, check)")
            else:
                log(f"no export for this config in {folder}: running the pipeline (golden gate, export, check)")
            write_atomic(folder / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
            with stages_logged_to(folder / "pipeline.log"):
                run(cfg, folder)
    return artifact_path(cfg, folder)


def cached_tokenizer(cfg: ZooConfig, folder: Path):
    """The entry's tokenizer, saved into `folder/tokenizer` on first use and read from there after."""
    from transformers import AutoTokenizer

    saved = folder / "tokenizer"
    if saved.is_dir():
        return AutoTokenizer.from_pretrained(saved)
    tokenizer = tokenizer_from(cfg.model.tokenizer, checkpoint_file(cfg.model.checkpoint))
    if tokenizer is not None:
        with locked(folder, log=lambda _: None), atomic_path(saved) as tmp:  # one process at a time replaces it
            tokenizer.save_pretrained(tmp)
    return tokenizer


def open_generator(cfg: ZooConfig, path: Path) -> Generator:
    """A Generator over the flatbuffer at `path` with the entry's tokenizer, chat template and stop tokens."""
    tokenizer = cached_tokenizer(cfg, path.parent)
    _, stops = special_ids(tokenizer, cfg.model.tokenizer)
    model = LiteModel(path, cfg.export.kv_layout, cfg.threads, cfg.generate.prefill_lens)
    return Generator(model, tokenizer, stops, cfg.model.tokenizer.chat_template)


# folders of weight snapshots (zoo/checkpoint/sources.py), not exports: shown and cleared with the entries
SNAPSHOTS = {"random": "weight snapshots of model.checkpoint=random", "gguf": "float32 snapshots of GGUF checkpoints"}


def entries(root: Path) -> list[Path]:
    """The export entries under `root`."""
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SNAPSHOTS) if root.is_dir() else []


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str]) -> int:
    parser = Arguments(prog="python -m zoo.cache", description=__doc__.splitlines()[0])
    parser.add_argument(
        "dir", nargs="?", help="the cache root (default: $ZOO_CACHE, $XDG_CACHE_HOME/zoo, ~/.cache/zoo)"
    )
    parser.add_argument("--clear", action="store_true", help="remove every entry (waits for one being written)")
    args = parser.parse_args(argv)
    root = cache_root(args.dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: not a folder; give the cache folder (or set ZOO_CACHE)")
    found = entries(root)
    if args.clear:
        for name in SNAPSHOTS:
            remove(root / name)
        for entry in found:
            with locked(entry, log=lambda s: print(s, file=sys.stderr)):
                remove(entry / "report.json")  # first: an interrupted clear leaves entries that read as unfinished
                for item in entry.iterdir():
                    if item.name != ".lock":
                        remove(item)
            remove(entry)
        print(f"cleared {root}: {len(found)} entries")
        return 0
    total = 0
    for entry in found:
        size = size_of(entry)
        total += size
        why = unfinished(entry)
        print(f"{size / 2**20:10.1f} MiB  {entry.name}  {'ok' if why is None else 'unfinished'}")
    for name, what in SNAPSHOTS.items():
        if (root / name).is_dir():
            size = size_of(root / name)
            total += size
            print(f"{size / 2**20:10.1f} MiB  {name}/  {what}")
    print(f"{total / 2**20:10.1f} MiB  {root} ({len(found)} entries; clear: python -m zoo.cache --clear)")
    return 0


if __name__ == "__main__":
    exit_quietly(guarded("zoo.cache", lambda: main(sys.argv[1:]), sys.argv[1:]))
