"""The package's layers: every module imports, no import cycle, and no module imports a higher
layer (imports inside functions count: a lazy import still ties the two modules together)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import siimcovid

ROOT = Path(siimcovid.__file__).parent
# Lower number = lower layer. A module may import its own layer or lower ones; a module (or a
# package's modules) not listed here is only checked for cycles.
LAYERS = {
    0: {"errors", "log", "paths", "boxes", "clihelp", "simplex", "accelerator", "variants"},
    1: {"data", "folds", "submission", "metric", "scoring", "layout", "runs", "tables"},
    2: {"preprocess", "baseline"},
    3: {"classify"},
    4: {"study", "binary", "detect"},
    5: {"ensemble"},
    6: {"inference"},
    7: {"kaggle"},
    8: {"dev", "__main__"},
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}


def _name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the siimcovid modules it imports anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        mod = _name(path, root)
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("siimcovid"):
                    continue
                deps.add(target)
                for alias in node.names:  # `from . import dicom` imports the module siimcovid.preprocess.dicom
                    sub = root.parent / target.replace(".", "/") / alias.name
                    if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                        deps.add(f"{target}.{alias.name}")
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("siimcovid")}
        graph[mod] = {d for d in deps if d != mod and d != "siimcovid"}
    return graph


def _top(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        rank = RANK.get(_top(mod))
        for dep in deps:
            dep_rank = RANK.get(_top(dep))
            if rank is not None and dep_rank is not None and dep_rank > rank:
                bad.append(f"{mod} (layer {rank}) imports {dep} (layer {dep_rank})")
    return sorted(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between two different top-level modules / packages, or None."""
    tops: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        tops.setdefault(_top(mod), set()).update(_top(d) for d in deps if _top(d) != _top(mod))
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(tops.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(tops):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_every_module_imports():
    for mod in import_graph():
        importlib.import_module(mod)


def test_no_cycle_and_no_import_from_a_higher_layer():
    graph = import_graph()
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert layer_violations(graph) == []
    # the cycle this test was written for
    assert not any(d.startswith("siimcovid.preprocess.convert") for d in graph["siimcovid.preprocess.tfrecords"])


def test_the_checks_can_fail(tmp_path):
    pkg = tmp_path / "siimcovid"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "layout.py").write_text("def f():\n    from .inference import run\n")
    (pkg / "inference.py").write_text("from . import layout\n")
    graph = import_graph(pkg)
    assert find_cycle(graph) in (["inference", "layout", "inference"], ["layout", "inference", "layout"])
    assert layer_violations(graph) == ["siimcovid.layout (layer 1) imports siimcovid.inference (layer 6)"]
