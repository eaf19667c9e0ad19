"""The package's layers: every module imports, no import cycle between any two siimcovid modules (also
two of one package), and no module imports a higher layer (imports inside functions count: a lazy
import still ties the two modules together)."""
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
    0: {"errors", "log", "paths", "boxes", "clihelp", "simplex", "accelerator", "variants", "atomic"},
    1: {"data", "folds", "submission", "metric", "scoring", "layout", "runs", "tables", "checkdata", "wbf", "costs"},
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


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle between siimcovid modules, also two modules of one package: the strongly
    connected components of more than one module, each sorted, and one path round it is `cycle_path`.

    Importing `siimcovid.a.b` also runs `siimcovid/a/__init__.py`; that implicit edge is not drawn,
    because `test_package_inits_import_nothing_of_their_own` keeps every `__init__` free of imports from
    its own package, so such an edge can never close a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(n: str) -> None:  # Tarjan; the graph is ~100 nodes, recursion depth is no concern
        index[n] = low[n] = len(index)
        stack.append(n)
        on_stack.add(n)
        for m in sorted(graph.get(n, ())):
            if m not in graph:
                continue
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on_stack:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            comp = []
            while True:
                m = stack.pop()
                on_stack.discard(m)
                comp.append(m)
                if m == n:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for n in sorted(graph):
        if n not in index:
            visit(n)
    return sorted(found)


def cycle_path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One circle through a component's first module: `a -> b -> ... -> a`."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    todo = [start]
    while todo:  # breadth first, so the path shown is a shortest one
        n = todo.pop(0)
        for m in sorted(graph[n] & members):
            if m == start:
                path = [n]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if m not in prev:
                prev[m] = n
                todo.append(m)
    raise AssertionError(f"no circle through {start}")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle between any two siimcovid modules (as `a -> b -> a`), or None."""
    cycles = module_cycles(graph)
    return cycle_path(graph, cycles[0]) if cycles else None


def test_every_module_imports():
    for mod in import_graph():
        importlib.import_module(mod)


def test_no_cycle_and_no_import_from_a_higher_layer():
    graph = import_graph()
    cycles = [f"{' -> '.join(cycle_path(graph, c))} (all of {c})" for c in module_cycles(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)
    assert layer_violations(graph) == []
    # the cycle this test was written for
    assert not any(d.startswith("siimcovid.preprocess.convert") for d in graph["siimcovid.preprocess.tfrecords"])


def test_package_inits_import_nothing_of_their_own():
    # the premise of module_cycles leaving out the implicit submodule -> package edge
    graph = import_graph()
    for path in ROOT.rglob("__init__.py"):
        pkg = _name(path, ROOT)
        own = sorted(d for d in graph[pkg] if d.startswith(pkg + "."))
        assert own == [], f"{path} imports its own submodules {own}"


def test_the_checks_can_fail(tmp_path):
    pkg = tmp_path / "siimcovid"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "layout.py").write_text("def f():\n    from .inference import run\n")
    (pkg / "inference.py").write_text("from . import layout\n")
    # a circle inside one package, through a lazy import and an absolute one
    (pkg / "detect").mkdir()
    (pkg / "detect" / "__init__.py").write_text("")
    (pkg / "detect" / "train.py").write_text("from .predict import predict\n")
    (pkg / "detect" / "predict.py").write_text("def f():\n    from siimcovid.detect.train import X\n")
    (pkg / "detect" / "merge.py").write_text("from siimcovid.detect import predict\n")  # no circle
    graph = import_graph(pkg)
    assert module_cycles(graph) == [
        ["siimcovid.detect.predict", "siimcovid.detect.train"],
        ["siimcovid.inference", "siimcovid.layout"],
    ]
    assert find_cycle(graph) == ["siimcovid.detect.predict", "siimcovid.detect.train", "siimcovid.detect.predict"]
    assert cycle_path(graph, ["siimcovid.inference", "siimcovid.layout"]) == [
        "siimcovid.inference", "siimcovid.layout", "siimcovid.inference"]
    assert layer_violations(graph) == ["siimcovid.layout (layer 1) imports siimcovid.inference (layer 6)"]
