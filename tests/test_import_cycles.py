"""No import cycle among edgemed's own modules, counting every import statement (inside functions too).

A static scan: each module of ``edgemed``, ``edgemed.export`` (the ``export/`` folder) and ``edgemed.bench`` (the
``bench/`` folder) is parsed, every ``import``/``from ... import`` is resolved (relative ones included) to the
product module it loads, and the graph is searched for strongly connected components. Imports under
``if TYPE_CHECKING:`` never run and are not counted.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    """Each top package of the product and its folder, as pyproject.toml's setuptools package-dir maps them."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    tops = [p for p in setuptools["packages"] if p == "edgemed" or p in mapped]
    return {name: REPO / mapped.get(name, name.replace(".", "/")) for name in tops}


def product_modules(dirs: dict[str, Path] | None = None) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the product's package folders."""
    modules: dict[str, Path] = {}
    for package, folder in (dirs or package_dirs()).items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if any(part.startswith((".", "__pycache__")) for part in rel):
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            name = ".".join((package, *parts))
            if name not in modules or folder.name != "edgemed":  # a package-dir mapping wins over edgemed/<name>/
                modules[name] = path
    return modules


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node, child = parents[node], node
        if isinstance(node, ast.If) and child in node.body:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                return True
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(product module loaded, line) for every import statement of module `name` (at any depth)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from pkg import mod` loads pkg.mod when it is a module, else pkg itself for the name it defines
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        for target in targets:
            while target and target not in modules and target.startswith("edgemed."):
                target = target.rpartition(".")[0]  # `import edgemed.x.y` where y is a name: the module x
            if target in modules and target != name:
                found.append((target, node.lineno))
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {module it imports: the first line importing it}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path, modules):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def shortest_loop(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module (breadth-first), to name in a failure."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child in members and child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    return component


def describe(graph: dict[str, dict[str, int]], modules: dict[str, Path], loop: list[str]) -> str:
    pairs = zip(loop[:-1], loop[1:], strict=True)
    steps = [f"{a} -> {b} ({modules[a].relative_to(REPO)}:{graph[a][b]})" for a, b in pairs]
    return "\n    ".join(steps)


def test_the_scan_sees_every_package_and_resolves_relative_and_mapped_imports(tmp_path):
    modules = product_modules()
    assert {"edgemed", "edgemed.export", "edgemed.bench", "edgemed.cli.main", "edgemed.export.run",
            "edgemed.bench.run"} <= set(modules)
    assert modules["edgemed.export.run"] == REPO / "export" / "run.py"
    # a made-up tree: relative imports at two levels, a function-level import and a TYPE_CHECKING one
    pkg = tmp_path / "edgemed"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "bench").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..c import thing\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgemed import a\n"
                              "import edgemed.bench.d as d\n")
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "bench" / "d.py").write_text("from edgemed.a import f\n")
    fake = product_modules({"edgemed": pkg, "edgemed.bench": tmp_path / "bench"})
    graph = import_graph(fake)
    assert graph["edgemed.a"] == {"edgemed.sub.b": 2}
    assert graph["edgemed.sub.b"] == {"edgemed.c": 1}
    assert graph["edgemed.c"] == {"edgemed.bench.d": 4}  # the TYPE_CHECKING import is not counted
    assert cycles(graph) == [["edgemed.a", "edgemed.bench.d", "edgemed.c", "edgemed.sub.b"]]
    loop = shortest_loop(graph, cycles(graph)[0])
    assert loop[0] == loop[-1] == "edgemed.a" and len(loop) == 5


def test_no_import_cycle_among_the_product_modules():
    modules = product_modules()
    graph = import_graph(modules)
    found = cycles(graph)
    if found:
        lines = [f"{len(c)} modules import each other ({', '.join(c)}), e.g.:\n    "
                 + describe(graph, modules, shortest_loop(graph, c)) for c in found]
        pytest.fail("import cycles among edgemed's modules (imports inside functions count):\n" + "\n".join(lines))
