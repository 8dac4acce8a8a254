"""No import cycles among the bridge's modules (issue 12).

The ``acyclic_siblings`` contract in pyproject.toml (run by ``lint-imports`` in .ci/run)
checks cycles between sibling modules and packages; this test checks the module graph
itself, so a cycle through a package's ``__init__`` (a child importing the package that
re-exports it) is found too. Imports under ``TYPE_CHECKING`` count, as they do for the
contract: a cycle there is still two modules that each need the other.
"""

from __future__ import annotations

import grimp


def module_cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    graph = grimp.build_graph(package, cache_dir=None)  # no cache folder in the checkout
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child)
                    work.append((child, iter(sorted(imported))))
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


def test_no_import_cycles_among_bridge_modules() -> None:
    cycles = module_cycles("bridge")
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch) -> None:
    """The finder itself: a two-module cycle and a package/child cycle are found."""
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from cyclepkg import child\n")
    (pkg / "child.py").write_text("import cyclepkg\n")
    (pkg / "a.py").write_text("from cyclepkg import b\n")
    (pkg / "b.py").write_text("from cyclepkg import a\n")
    (pkg / "c.py").write_text("from cyclepkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_cycles("cyclepkg") == [
        ["cyclepkg", "cyclepkg.child"],
        ["cyclepkg.a", "cyclepkg.b"],
    ]
