"""The import graph of the code keeps the documented layout (README, "Layout").

Run alone: `.venv/bin/python -m pytest tests/test_import_graph.py -q`. It reads the source with `ast`; nothing is
imported, so it needs neither Django nor a database.
"""

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("evaluator", "training", "workers", "prefloop")


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    }


MODULES = _modules()


def _own(name: str) -> str | None:
    """The module of ours that `name` (a module, or a module's attribute) resolves to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module of ours, whether the import sits inside a function); TYPE_CHECKING blocks left out."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [f"{child.module}.{alias.name}" for alias in child.names]
            for name in names:
                own = _own(name)
                if own:
                    yield own, inside
            yield from visit(child, inside)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False)


def _graph(*, with_function_imports: bool) -> dict[str, set[str]]:
    return {
        module: {
            target for target, inside in _imports(path) if target != module and (with_function_imports or not inside)
        }
        for module, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in graph:
        if node not in index:
            connect(node)
    return found


def test_no_module_imports_another_that_imports_it_back_at_load_time() -> None:
    assert _cycles(_graph(with_function_imports=False)) == []


def test_the_only_cycle_is_a_task_importing_its_service_inside_its_body() -> None:
    # HackSoft's documented form: services import tasks at module level (`<task>_task`); a task imports its
    # service inside the function body. Every other edge of a cycle is a defect.
    graph = _graph(with_function_imports=True)
    module_level = _graph(with_function_imports=False)
    for component in _cycles(graph):
        late_edges = {
            (source, target)
            for source in component
            for target in graph[source] & component
            if target not in module_level[source]
        }
        assert late_edges, component
        assert all(
            source == "workers.tasks" and target.startswith("evaluator.services.") for source, target in late_edges
        )


def test_training_never_imports_the_web_app_nor_the_workers() -> None:
    for module, path in MODULES.items():
        if module.startswith("training"):
            assert not [target for target, _ in _imports(path) if not target.startswith("training")], module


def test_pure_statistics_and_parsers_never_import_the_orm_layers() -> None:
    forbidden = ("evaluator.services", "evaluator.selectors", "evaluator.views", "workers")
    for module, path in MODULES.items():
        if module.startswith(("evaluator.stats", "evaluator.parsing")):
            assert not [target for target, _ in _imports(path) if target.startswith(forbidden)], module
