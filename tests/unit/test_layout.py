"""The package's structure, held: no module of ``coordinator`` imports one that imports it
back (directly or round a longer circle), and nothing outside the participant SDK reaches
into its private modules (the CLI, the server, the benches and the chaos harness use
``coordinator.participant`` and its public sub-packages)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK = "coordinator.participant"


def _modules(top: str) -> dict[str, Path]:
    found = {}
    for path in (ROOT / top).rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        if "_proto" in rel.parts or "alembic" in rel.parts:
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every module ``name`` imports, at any level of the file (TYPE_CHECKING included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            yield from subs if len(subs) == len(node.names) else [target, *subs]


def _graph() -> dict[str, set[str]]:
    modules = _modules("coordinator")
    known = set(modules)
    return {name: {t for t in _imports(name, path, known) if t in known and t != name}
            for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            component.append(v)
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


def test_no_module_of_coordinator_imports_one_that_imports_it_back() -> None:
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private_to_the_sdk(target: str) -> bool:
    rest = target.removeprefix(SDK + ".")
    return target.startswith(SDK + ".") and any(part.startswith("_") for part in rest.split("."))


def test_nothing_outside_the_sdk_imports_its_private_modules() -> None:
    everything: dict[str, Path] = {}
    for top in ("coordinator", "bench", "chaos"):
        everything.update(_modules(top))
    known = set(everything) | set(_modules("coordinator"))
    offenders = sorted(
        f"{name} -> {target}"
        for name, path in everything.items() if not name.startswith(SDK)
        for target in _imports(name, path, known) if _private_to_the_sdk(target))
    assert offenders == []
