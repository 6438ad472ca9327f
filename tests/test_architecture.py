"""The shape of the code: arrows point one way (webapp/ never imports workers/), no import cycles, jobs by name."""
import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT
from webapp import jobs

PACKAGES = ("webapp", "workers")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict) -> set[str]:
    """Every project module that importing `name` runs: what it imports, at the top or inside a function (a deferred
    import is still an arrow), and the packages around each (importing a.b.c runs a/__init__ and a/b/__init__).

    A module's own enclosing packages are left out: Python has run them before the module, and a module taking a
    name its package defined first (`from webapp.archive import bp`) is how blueprints are made, not a cycle."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            while target:
                found.add(target)
                target = target.rpartition(".")[0]
    parts = name.split(".")
    enclosing = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {t for t in found if t in known and t not in enclosing}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_webapp_never_imports_workers():
    offenders = sorted(f"{name} -> {target}" for name, targets in graph().items() if name.startswith("webapp")
                       for target in targets if target.split(".")[0] == "workers")
    assert offenders == []


def cycles_in(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or round about (Tarjan's strongly connected sets)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles():
    assert cycles_in(graph()) == []


def test_the_cycle_finder_finds_a_round_about_cycle():
    assert cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_walk_sees_deferred_imports(tmp_path):
    """The cycle test would pass for the wrong reason if imports inside functions were missed."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from webapp.jobs import JobRun\n")
    assert imports_of("webapp.x", path, {"webapp": None, "webapp.jobs": None, "webapp.x": None}) == {"webapp.jobs"}


def test_the_walk_sees_the_packages_an_import_runs(tmp_path):
    """Importing webapp.notify.fanout runs webapp/notify/__init__.py, which imports the notify routes."""
    path = tmp_path / "m.py"
    path.write_text("from webapp.notify.fanout import x\n")
    known = dict.fromkeys(["webapp", "webapp.notify", "webapp.notify.fanout", "webapp.admin", "webapp.admin.routes"])
    assert imports_of("webapp.admin.routes", path, known) == {"webapp.notify", "webapp.notify.fanout"}


@pytest.mark.parametrize("name", jobs.JOB_NAMES)
def test_every_job_name_imports(name):
    module, _, func = name.rpartition(".")
    assert callable(getattr(importlib.import_module(module), func))


def test_every_job_name_used_in_webapp_is_a_known_constant():
    """Jobs are enqueued by the constants in webapp/jobs.py, never by a string typed elsewhere."""
    typed = sorted(f"{path.relative_to(ROOT)}: {node.value}" for name, path in modules().items()
                   if name.startswith("webapp") and name != "webapp.jobs"
                   for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and node.value.startswith("workers."))
    assert typed == []
