"""The house's shape: the runtime stands without the build side."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

RUNTIME = [
    "zoo.runtime",
    "zoo.runtime.model",
    "zoo.runtime.generate",
    "zoo.runtime.sampling",
    "zoo.runtime.speed",
    "zoo.runtime.tokenizer",
]
BUILD_SIDE = [
    "torch",
    "transformers",
    "tensorflow",
    "jax",
    "hydra",
    "omegaconf",
    "zoo.config",
    "zoo.pipeline",
    "zoo.checkpoint",
    "zoo.export",
]


def test_runtime_imports_nothing_of_the_build_side():
    """`zoo.runtime` runs a flatbuffer with LiteRT alone: importing it loads no torch, transformers, TensorFlow,
    Hydra nor any build module (its config types come from zoo.schema), so it works installed without them."""
    probe = (
        f"import sys\nfor m in {RUNTIME!r}: __import__(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BUILD_SIDE!r} or m in {BUILD_SIDE!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def _imports() -> dict[str, set[str]]:
    """Module -> the zoo modules it imports, at the top or inside a function (not under TYPE_CHECKING: no import
    at run time), read from the source."""
    modules = {}
    for path in (ROOT / "zoo").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets.update([base, *(f"{base}.{a.name}" for a in node.names)])
        graph[name] = {o for t in targets if t.startswith("zoo") and (o := owner(t)) not in (None, name)}
    return graph


def test_no_import_circle():
    """No module reaches itself through imports, lazy ones inside functions included: the layers (schema and
    files, checkpoint and architectures, export and runtime, the kinds, the stages, the commands) import downward
    only, so any room can be read, tested and replaced without the ones above it."""
    graph, done, path, circles = _imports(), set(), [], []

    def visit(module: str) -> None:
        if module in path:
            circles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        path.append(module)
        for child in sorted(graph[module]):
            visit(child)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


STAGES = ["zoo.pipeline", "zoo.config", "zoo.cache", "zoo.eval.stage", "zoo.debug.run", "zoo.bench", "zoo.report"]


def test_kinds_sit_below_the_stages():
    """A kind's package (zoo/kinds/) owns its gate, check, eval and programs and imports only kind-neutral rooms
    below it: no stage, no command, and no other kind."""
    graph = _imports()
    for module, targets in graph.items():
        if not module.startswith("zoo.kinds"):
            continue
        up = sorted(t for t in targets if t in STAGES or t.endswith("__main__"))
        assert not up, f"{module} imports the stage(s) {up}"
        if module.count(".") < 2:
            continue  # the registry, which imports every kind
        kind = module.split(".")[2]
        others = sorted(t for t in targets if t.startswith("zoo.kinds.") and t.split(".")[2] not in (kind, "base"))
        assert not others, f"{module} imports another kind's code: {others}"


def test_nothing_below_the_kinds_imports_them():
    """The schema, its composition and the rooms the kinds build on (checkpoint, architectures, export, runtime,
    the gate's and the check's shared parts) never import zoo.kinds, lazily or not: only the stages and the
    commands above look a kind up."""
    below = ("zoo.schema", "zoo.config", "zoo.golden", "zoo.check", "zoo.checkpoint", "zoo.architectures")
    below += ("zoo.export", "zoo.runtime", "zoo.stream", "zoo.files", "zoo.errors")
    for module, targets in _imports().items():
        if module.startswith(below):
            up = sorted(t for t in targets if t.startswith("zoo.kinds"))
            assert not up, f"{module} imports {up}: a kind belongs above it"


def test_every_import_of_zoo_names_something_that_exists():
    """`from zoo.x import y` anywhere in zoo/, inside functions too, names a module or an attribute that exists:
    a lazy import of a name that moved fails here, not in the one run that reaches it."""
    import importlib.util

    missing = []
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert not missing, "imports of names that do not exist:\n" + "\n".join(missing)
