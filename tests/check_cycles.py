"""Print the import cycles of the bastion package and fail on any (issue 22).

Two views of one grimp graph (every import counts: top level, inside functions and under
TYPE_CHECKING, because each is a dependency someone reading the code must follow):

* packages: ``bastion.auth`` -> ``bastion.proxy`` when any module of the first imports any
  module of the second; a cycle here is two packages that need each other.
* modules: one node per module; a package's ``__init__`` counts as its own module.

Each strongly connected component with more than one node is printed with every import between
its members (for packages, one module-level example each), so the edge to cut is visible. Exit
status 1 when any exists.
The layer order itself is import-linter's job (``[tool.importlinter]`` in pyproject.toml).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

import grimp

PACKAGE = "bastion"


def _top(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; returns the components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            if children:
                child = children.pop(0)
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph.get(child, ()))))
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
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def module_graph(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        if module.split(".")[0] != PACKAGE:
            continue
        edges[module] = {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            if imported.split(".")[0] == PACKAGE
        }
    return edges


def package_graph(modules: Mapping[str, set[str]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, imported in modules.items():
        source = _top(module)
        targets = edges.setdefault(source, set())
        targets.update(_top(m) for m in imported if _top(m) != source)
    return edges


def _edges_within(
    modules: Mapping[str, set[str]], component: list[str], packages: bool
) -> list[str]:
    """Every import between members of the component, with one module-level example each."""
    members = set(component)
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for module, imported in sorted(modules.items()):
        for target in sorted(imported):
            a, b = (_top(module), _top(target)) if packages else (module, target)
            if a != b and a in members and b in members:
                found.setdefault((a, b), (module, target))
    return [
        f"{a} -> {b}" + (f"  ({m} -> {t})" if packages else "")
        for (a, b), (m, t) in sorted(found.items())
    ]


def main() -> int:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    modules = module_graph(graph)
    packages = package_graph(modules)
    bad = 0
    for label, edges, as_packages in (("package", packages, True), ("module", modules, False)):
        components = strongly_connected(edges)
        print(f"{label} cycles: {len(components)}")
        for component in components:
            bad += 1
            print(f"  {{{', '.join(component)}}}")
            for edge in _edges_within(modules, component, as_packages):
                print(f"    {edge}")
    if bad:
        return 1
    print("import graph ok: no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
