"""The import graph of a Python package, read from its source with ``ast`` (nothing is imported).

Every ``import`` / ``from ... import`` statement counts, at module level or inside a function (a lazy
import still ties two modules together). An edge goes to each of the package's own modules a statement
names: ``from a.b import c`` gives ``a.b`` and, when ``a.b.c`` is a module, ``a.b.c``; ``import a.b.c``
gives the longest of ``a.b.c``, ``a.b``, ``a`` that is a module. A package is its ``__init__``.
``tools/module_graph.py`` prints the graph; ``tests/test_architecture.py`` checks the rules on it.
"""
from __future__ import annotations

import ast
import os
from collections import defaultdict

__all__ = ["cycles", "import_graph", "module_files", "package_graph", "package_of"]


def module_files(package_dir: str) -> dict[str, str]:
    """Dotted module name -> file for every ``.py`` under ``package_dir`` (the package's own folder,
    whose name is the top-level name)."""
    package_dir = os.path.abspath(package_dir)
    root = os.path.dirname(package_dir)
    out = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imported_names(module: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(package_dir: str) -> dict[str, set[str]]:
    """Module -> the package's own modules it imports (see the module docstring); every module is a key."""
    files = module_files(package_dir)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        is_package = os.path.basename(path) == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(module, is_package, node):
                if isinstance(node, ast.Import):
                    while name and name not in files:
                        name = name.rpartition(".")[0]
                if name in files and name != module:
                    graph[module].add(name)
    return graph


def package_of(module: str, depth: int) -> str:
    """The first ``depth`` dotted parts of ``module`` (``disco_detr.modeling.layers.mlp``, 2 ->
    ``disco_detr.modeling``)."""
    return ".".join(module.split(".")[:depth])


def package_graph(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The module graph folded to packages of ``depth`` parts; edges inside one package are left out."""
    out: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        source = package_of(module, depth)
        out[source].update(t for t in map(lambda m: package_of(m, depth), targets) if t != source)
    return dict(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one node (and nodes importing
    themselves), each sorted, the list sorted. Iterative Tarjan, so deep graphs do not recurse."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)
