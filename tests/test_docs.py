"""Every `python -m zoo...` command shown in README.md and docs/*.md runs, cheaply, as a user would type it.

Commands are the lines of ```bash / ```sh / ```shell blocks that start with `python -m zoo` (or
`.venv/bin/python -m zoo`), joined over trailing backslashes, split as the shell splits them (comments dropped).
Each module is exercised for real, but without loading a model:

- `python -m zoo ARGS`: run with `--cfg job` appended (Hydra composes and type-checks the config against the schema
  and prints it; no model runs). A `-m` sweep cannot take `--cfg` (Hydra refuses both at once), so its sweep is
  expanded by Hydra's own override parser and every value of every swept override is composed once this way.
- `python -m zoo.generate ARGS`, `python -m zoo.debug ARGS`: their arguments are all config overrides, so the
  config is composed and validated by the command's own `compose_config`, the first thing the command does.
- `python -m zoo.eval FILE ARGS`: FILE is made (empty) with a report.json of the default config next to it, and the
  command's own `run_config` merges and validates ARGS over it, the first thing the command does.
- `python -m zoo.summary DIR`: DIR is made as a one-job sweep folder and the command runs for real.
- `python -m zoo.new CONFIG [OPTIONS]`: runs for real on a HF config.json written by transformers at a path in the
  test's folder (same folder name as documented), drafting into that folder's ./conf/model/; the `python -m zoo`
  lines of the same doc file run in that folder, so the draft they name exists.
- `python -m zoo.cache [--clear]`: runs for real on the test session's own cache (`$ZOO_CACHE`, tests/conftest.py).
- `python -m zoo.web`, `python -m zoo.runtime.speed`, `python -m zoo.versus`: `--help` exits 0 with a usage text
  naming every option the documented command uses.

Commands run in a forked child of this process (zoo's imports are paid once, not per command), through `runpy` as
`python -m` runs them, with the child's stdout/stderr captured; an unknown config group, option or field fails.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from zoo.eval.__main__ import run_config
from zoo.generate import compose_config
from zoo.schema import ZooConfig

import forked

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell"}
COMMAND = re.compile(r"^(?:\.venv/bin/)?python -m (zoo[\w.]*)(?:\s|$)")
# HF configs for the `python -m zoo.new <folder>/config.json` examples, by the documented folder name.
HF_CONFIGS = {"Qwen3-0.6B": "Qwen3Config"}
TIMEOUT_S = 300  # composition takes seconds; this only bounds a hang, on a machine however busy


def doc_commands() -> list[tuple[Path, int, str]]:
    """(doc file, line, command) for each command line of a shell block; other blocks are output, not commands."""
    found = []
    for path in DOCS:
        fence, pending, start = None, "", 0
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                fence = stripped[3:].strip() if fence is None else None
                continue
            if fence not in SHELL:
                continue
            if not pending:
                start = n
            pending += stripped
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if COMMAND.match(pending):
                found.append((path, start, pending))
            pending = ""
    return found


COMMANDS = doc_commands()


def cmd_id(c: tuple[Path, int, str]) -> str:
    return f"{c[0].relative_to(ROOT)}:{c[1]}"


def split(command: str) -> tuple[str, list[str]]:
    module = COMMAND.match(command).group(1)
    argv = shlex.split(command, comments=True)
    return module, argv[argv.index(module) + 1 :]


def typeable(command: str) -> None:
    """A command a user can paste: no `<placeholder>` (the shell reads it as a redirection), no `...`, no pipes."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    tokens = list(lexer)
    assert not [t for t in tokens if set(t) <= set("();<>|&")], f"shell operators in {command!r}"
    assert "..." not in tokens, f"a literal ... in {command!r}"


def _output(run) -> tuple[int, str]:
    try:
        code, out, err = run()
    except forked.Hung as hung:
        pytest.fail(str(hung))
    return code, out + err


def in_child(fn, cwd: Path) -> tuple[int, str]:
    """fn() in a forked child in `cwd` (tests/forked.py): its exit status and output."""
    return _output(lambda: forked.forked(fn, cwd, timeout=TIMEOUT_S))


def run_module(module: str, argv: list[str], cwd: Path) -> tuple[int, str]:
    """`python -m module argv` as the shell would run it, in a forked child: its exit status and output."""
    return _output(lambda: forked.run_module(module, argv, cwd, timeout=TIMEOUT_S))


def sweep_points(argv: list[str]) -> list[list[str]]:
    """A `-m` command's jobs, enough of them that every value of every swept override is composed once (the
    full product adds nothing composition can catch and would multiply the time)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if a not in ("-m", "--multirun")]
    values = []
    for override in OverridesParser.create().parse_overrides(args):
        key = override.get_key_element()
        if override.is_sweep_override():
            values.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            values.append([override.input_line])
    n = max((len(v) for v in values), default=1)
    return [[v[i % len(v)] for v in values] for i in range(n)]


WORKDIRS: dict[Path, tuple[Path, dict[int, tuple[int, str]]]] = {}


def workdir(doc: Path, tmp_root: Path) -> tuple[Path, dict[int, tuple[int, str]]]:
    """The folder a doc file's commands run in, with that doc's `python -m zoo.new` commands already run there
    (the `python -m zoo model=<draft>` lines after them name their drafts); their results by line."""
    if doc not in WORKDIRS:
        cwd = tmp_root / doc.stem
        cwd.mkdir()
        results = {}
        for path, line, command in COMMANDS:
            module, argv = split(command)
            if path == doc and module == "zoo.new":
                results[line] = run_module(module, [hf_config(a, cwd) for a in argv], cwd)
        WORKDIRS[doc] = cwd, results
    return WORKDIRS[doc]


def hf_config(arg: str, cwd: Path) -> str:
    """A documented `<folder>/config.json` argument, made real under cwd/hf/ by transformers' own config class."""
    if not arg.endswith("config.json"):
        return arg
    import transformers

    folder = Path(arg).parent.name
    assert folder in HF_CONFIGS, f"zoo.new example {arg}: add its folder name to HF_CONFIGS"
    target = cwd / "hf" / folder
    getattr(transformers, HF_CONFIGS[folder])().save_pretrained(target)
    return str(target / "config.json")


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory) -> Path:
    WORKDIRS.clear()
    return tmp_path_factory.mktemp("docs")


def test_commands_found():
    modules = {split(c)[0] for _, _, c in COMMANDS}
    assert len(COMMANDS) >= 20 and {"zoo", "zoo.generate", "zoo.eval", "zoo.web", "zoo.new", "zoo.summary"} <= modules


def test_no_command_outside_shell_blocks():
    """A `python -m zoo` line in a block that is not marked bash/sh/shell would escape this test."""
    hidden = []
    for path in DOCS:
        fence = None
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                fence = stripped[3:].strip() if fence is None else None
            elif fence is not None and fence not in SHELL and COMMAND.match(stripped):
                hidden.append(f"{path.relative_to(ROOT)}:{n}")
    assert not hidden, f"commands outside ```bash blocks: {hidden}"


@pytest.mark.parametrize(
    "doc,line,command",
    [c if c[0].name == "README.md" else pytest.param(*c, marks=pytest.mark.slow) for c in COMMANDS],
    ids=[cmd_id(c) for c in COMMANDS],
)  # README's commands in the fast tier, docs/'s in the full suite
def test_documented_command(doc, line, command, tmp_root):
    module, argv = split(command)
    typeable(command)
    cwd, new_results = workdir(doc, tmp_root)

    if module == "zoo":
        if "--help" in argv or "--cfg" in argv:
            jobs = [argv]
        elif "-m" in argv or "--multirun" in argv:
            jobs = [[*job, "--cfg", "job"] for job in sweep_points(argv)]
        else:
            jobs = [[*argv, "--cfg", "job"]]
        for job in jobs:
            code, out = run_module("zoo", job, cwd)
            assert code == 0, f"python -m zoo {' '.join(job)}:\n{out}"
            assert "--cfg" not in job or "model:" in out, out

    elif module == "zoo.generate":
        code, out = in_child(lambda: compose_config(argv), cwd)
        assert code == 0, out

    elif module == "zoo.debug":  # its config composed and validated as the command does it
        from zoo import kinds
        from zoo.debug.__main__ import compose_config as debug_config

        code, out = in_child(lambda: debug_config(argv, kinds.problems), cwd)
        assert code == 0, out

    elif module == "zoo.eval":
        file = Path(argv[0])
        assert not file.is_absolute() and file.suffix == ".tflite", "show a run-relative .tflite path"

        def merge():
            from omegaconf import OmegaConf

            (cwd / file).parent.mkdir(parents=True, exist_ok=True)
            (cwd / file).touch()
            config = OmegaConf.to_container(OmegaConf.structured(compose_config([])), enum_to_str=True)
            (cwd / file).with_name("report.json").write_text(json.dumps({"config": config}))
            cfg, _ = run_config(file, argv[1:])
            assert isinstance(cfg, ZooConfig)

        code, out = in_child(merge, cwd)
        assert code == 0, out

    elif module == "zoo.summary":
        assert len(argv) == 1, "zoo.summary takes one sweep folder"
        job = cwd / argv[0] / "quant=int8_dynamic"
        (job / ".hydra").mkdir(parents=True, exist_ok=True)
        (job / ".hydra" / "overrides.yaml").write_text("- quant=int8_dynamic\n")
        (job / ".hydra" / "config.yaml").write_text("quant: {name: int8_dynamic}\n")
        code, out = run_module(module, argv, cwd)
        assert code == 0 and "summary:" in out, out

    elif module == "zoo.new":
        code, out = new_results[line]
        assert code == 0 and "wrote " in out, out
        from zoo.config import CONF_DIR

        drafted = Path(out.split("wrote ", 1)[1].split()[0]).stem
        assert not (CONF_DIR / "model" / f"{drafted}.yaml").exists(), (
            f"the draft {drafted} would be shadowed by the packaged entry of that name: show --name <another>"
        )

    elif module == "zoo.cache":  # for real, on the test session's own cache ($ZOO_CACHE, tests/conftest.py)
        code, out = run_module(module, argv, cwd)
        assert code == 0 and ("cleared " in out if "--clear" in argv else "entries; clear:" in out), out

    elif module in ("zoo.web", "zoo.runtime.speed", "zoo.versus"):
        code, out = run_module(module, ["--help"], cwd)
        assert code == 0 and "usage:" in out, out
        options = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        assert all(re.search(rf"(^|\s){re.escape(o)}\b", out) for o in options), f"{options} vs\n{out}"

    else:
        pytest.fail(f"no check for python -m {module}: add one to tests/test_docs.py")


def test_links_resolve():
    """Relative links between README.md and docs/ point at files that exist."""
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_lists_every_entry():
    """The README's entry table names every packaged entry."""
    from zoo.config import CONF_DIR

    readme = (ROOT / "README.md").read_text()
    missing = [p.stem for p in (CONF_DIR / "model").glob("*.yaml") if f"| `{p.stem}`" not in readme]
    assert not missing, missing


def test_the_errors_table_has_every_code():
    """docs/errors.md's table names every error code zoo/errors.py defines, and no other."""
    from zoo import errors

    codes = {c.code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ZooError)}
    table = (ROOT / "docs" / "errors.md").read_text().split("| code | what it means |")[1].split("\n\n")[0]
    documented = {code for row in table.splitlines()[2:] for code in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    assert documented == codes - {"error"}, (sorted(codes - documented), sorted(documented - codes))


def test_the_architecture_rooms_name_every_module():
    """docs/architecture.md's rooms table names every module of zoo/ (by path, or by name in its folder's row)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.name == "__init__.py" or "conf" in rel.parts:
            continue
        folders = [f"`{f.as_posix()}/`" for f in rel.parents if f.parts]  # its folder's row, or an enclosing one's
        if str(rel) not in text and not (any(f in text for f in folders) and f"`{path.name}`" in text):
            missing.append(str(rel))
    assert not missing, f"rooms missing from docs/architecture.md: {missing}"
