"""The `zoo` command: one name over zoo's tools, `zoo <command> [args]`. Each command is the module that
`python -m <module>` runs (both keep working); `zoo --help` lists them and the config groups a user picks."""

from __future__ import annotations

import importlib.metadata
import runpy
import sys
from pathlib import Path

from zoo.errors import InputError
from zoo.quiet import exit_quietly, guarded

# command -> (the module it runs, what it does); `sweep` is `convert -m`
COMMANDS = {
    "convert": ("zoo", "gate an entry against transformers, export it to LiteRT, check the file (the main job)"),
    "sweep": ("zoo", "`convert -m`: one job per combination, e.g. `zoo sweep quant=none,int8_dynamic`"),
    "generate": ("zoo.generate", "generate text from an entry's flatbuffer, exporting it first if not cached"),
    "eval": ("zoo.eval", "score a flatbuffer on real text against transformers (PPL, KLD, same top)"),
    "debug": ("zoo.debug", "name the layer and op where a flatbuffer diverges, overlaid in Model Explorer"),
    "new": ("zoo.new", "draft a model entry (conf/model/<name>.yaml) from a HF config.json"),
    "cache": ("zoo.cache", "list, fill or clear the export cache of `zoo generate`"),
    "summary": ("zoo.summary", "rebuild a sweep folder's summary table and plots"),
    "versus": ("zoo.versus", "zoo's decode speed against llama.cpp's on the same weights"),
    "web": ("zoo.web", "serve a web bundle: the model running in the browser with LiteRT.js"),
}
GROUPS = ("model", "quant", "export")  # the config groups a user picks; `zoo convert --cfg job` shows the rest
VERSIONS = ("torch", "tensorflow-cpu", "ai-edge-litert", "ai-edge-quantizer", "transformers")  # what a file depends on


def version() -> str:
    """zoo's version and the pinned versions of the libraries that build and run its files."""
    pins = []
    for name in VERSIONS:
        try:
            pins.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(f"{name} (not installed)")
    return f"zoo {importlib.metadata.version('zoo')} ({', '.join(pins)})"


def options(group: str) -> list[tuple[str, str]]:
    """The packaged options of a config group, each with the first sentence of its YAML's opening comment."""
    out = []
    for path in sorted((Path(__file__).parent / "conf" / group).glob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        about = first.removeprefix("#").strip() if first.startswith("#") else ""
        about = about.split(". ")[0].split(": ")[0]
        out.append((path.stem, about if len(about) <= 80 else about[:80].rsplit(" ", 1)[0] + " ..."))
    return out


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "zoo: HF-style checkpoints to verified LiteRT (TFLite) models for on-device LLM inference.",
        "",
        "usage: zoo <command> [group=option ...] [key=value ...]      zoo --version",
        "       zoo convert model=gemma_2b quant=int8_dynamic         (python -m zoo ... is the same)",
        "       zoo convert quant=int8_dynamic -o out/smollm2.tflite  (-o: export.output, where the file goes)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()),
        "",
        "config groups (your own YAML in ./conf/<group>/ joins them):",
    ]
    for group in GROUPS:
        lines.append(f"  {group}=")
        lines += [f"    {name:<28} {about}" for name, about in options(group)]
    lines += [
        "",
        "`zoo convert --cfg job` prints the whole composed config; `zoo <command> --help` a command's own help.",
        "Docs: README.md and docs/ (errors.md: what each error code means).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(version())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise InputError(f"unknown command {command!r}: use one of {', '.join(COMMANDS)} (zoo --help)")
    module = COMMANDS[command][0]
    if module == "zoo" and "-o" in rest[:-1]:  # `-o PATH`: where the flatbuffer goes
        at = rest.index("-o")
        rest = [*rest[:at], f"export.output={rest[at + 1]}", *rest[at + 2 :]]
    sys.argv = [f"zoo {command}", *(["-m"] if command == "sweep" else []), *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)  # exits with the command's own status
    return 0


def cli() -> None:
    exit_quietly(guarded("zoo", lambda: main(sys.argv[1:]), sys.argv[1:]))
