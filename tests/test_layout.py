"""The package's layout, read from its imports (docs/ARCHITECTURE.md, "Layout"): rooms in
layers, every import going down or within its own room, no cycle (lazy imports count), a short
top floor, no long file, and one path from a finished run's checkpoint to scores."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

SRC = ROOT / "src"
# lowest first: a module may import its own room and the rooms of lower layers, never a
# room of its own layer or above
LAYERS = [
    {"errors", "params", "metrics"},
    {"utils"},
    {"data"},
    {"models"},
    {"config"},
    {"training", "runs"},
    {"serving", "analysis"},
    {"jobs"},
    {"combine", "search"},
    {"front"},  # the entries: cli.py, __main__.py, workflow.py (Python's) and __init__.py
]
LAYER = {room: n for n, rooms in enumerate(LAYERS) for room in rooms}


def _modules() -> dict[str, Path]:
    return {
        ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f
        for f in SRC.rglob("*.py")
    }


def _imports() -> dict[str, set[str]]:
    """Every module's imports of lightrec modules, lazy ones included."""
    files = _modules()
    graph = {}
    for name, f in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    base = ".".join(name.split(".")[: -node.level] + [node.module])
                subs = {f"{base}.{a.name}" for a in node.names} & files.keys()
                deps |= subs or {base}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else "lightrec"
    return "front" if room in ("lightrec", "cli", "__main__", "workflow") else room


def test_every_module_is_in_a_room_of_a_layer():
    assert {_room(m) for m in _modules()} <= set(LAYER)


def test_imports_go_down_or_stay_in_their_room():
    upward = [
        f"{m} -> {d}"
        for m, deps in _imports().items()
        for d in deps
        if _room(d) != _room(m) and LAYER[_room(d)] >= LAYER[_room(m)]
    ]
    assert upward == []


def test_there_is_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*path[path.index(d) :], d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_top_floor_is_short_and_no_file_is_long():
    top = sorted(p.name for p in (SRC / "lightrec").glob("*.py"))
    assert len(top) <= 8, top
    long = {
        str(f.relative_to(SRC)): n
        for f in SRC.rglob("*.py")
        if (n := len(f.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_a_finished_runs_scorer_is_defined_once():
    """One path from a checkpoint to scores: FinishedRun reads a history in the model's view
    and scores it; predict, blend, rerank, the API and export call it."""
    code = {str(f.relative_to(SRC)): f.read_text(encoding="utf-8") for f in SRC.rglob("*.py")}
    collates = [f for f, text in code.items() if re.search(r"\.collate\(\w+\.data_view", text)]
    assert collates == ["lightrec/runs/finished.py"]
    loads = [f for f, text in code.items() if re.search(r"\bload_model\(", text)]
    assert loads == ["lightrec/runs/finished.py"]
    callers = {
        "lightrec/serving/predict.py": ".scorer(",
        "lightrec/combine/blend.py": ".submission_scorer(",
        "lightrec/combine/rerank.py": ".submission_scorer(",
        "lightrec/serving/api.py": ".scorer(",
        "lightrec/serving/export.py": ".inputs(",
    }
    for path, call in callers.items():
        assert call in code[path], path
