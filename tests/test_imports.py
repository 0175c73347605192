"""The import graph of anet/ and dispatcher/ has no circle.

A circle makes a module's names depend on which module of the circle was imported first (a
half-initialised module), and it is the sign of two floors that each need the other. Every
module found on disk is checked, so a new one is covered the day it is added.

Edges are read with `ast`, nothing is imported: `import a.b`, `from . import x` (x a module, or
a name of the package's `__init__`), `from .m import y`, at any depth, inside functions too.
Only imports under `if TYPE_CHECKING:` are left out: they never run, so they cannot leave a
module half-initialised; they name a type another floor hands over (the `Cluster` that
observe.py is given, the `HostSpec` that identity.py is given by hosts.py, which imports it late).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("anet", "dispatcher")

EXCEPTED: dict[tuple[str, str], str] = {}
"""(importer, imported) -> why this edge may close a circle. Empty, and best kept so."""


class Edge(NamedTuple):
    source: str
    target: str
    where: str  # path:line, and "in a function" for an import that runs late


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package is its `__init__`)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    nodes: Iterable[ast.AST], in_function: bool = False
) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement among `nodes` and below that can run, and whether it sits in a
    function (and so runs late)."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, in_function)  # the else branch does run
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        else:
            late = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            yield from _imports(ast.iter_child_nodes(node), late)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` loads: itself, else its longest prefix that is one of ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def edges(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Edge]:
    modules = module_names(root, packages)
    found = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node, late in _imports([ast.parse(path.read_text(), str(path))]):
            if isinstance(node, ast.Import):
                targets = [_known(alias.name, modules) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    anchor = ".".join(parts[: len(parts) - node.level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                # `from pkg import name`: the module pkg.name if there is one, else pkg itself
                targets = [
                    f"{base}.{alias.name}"
                    if f"{base}.{alias.name}" in modules
                    else _known(base, modules)
                    for alias in node.names
                ]
            where = f"{path.relative_to(root)}:{node.lineno}" + (" in a function" if late else "")
            found += [Edge(module, t, where) for t in targets if t and t != module]
    return found


def circles(found: list[Edge]) -> list[list[Edge]]:
    """One closed path for each group of modules that import each other (Tarjan's components)."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in found:
        if (edge.source, edge.target) not in EXCEPTED:
            graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:  # node is the root of a component: pop it whole
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, group) for group in groups]


def _closed_path(graph: dict[str, dict[str, Edge]], group: set[str]) -> list[Edge]:
    """The shortest way from the group's first module back to itself, within the group."""
    start = min(group)
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt, edge in sorted(graph.get(node, {}).items()):
                if nxt in group and nxt not in came:
                    came[nxt] = edge
                    following.append(nxt)
        if start in came:
            break
        frontier = following
    path = [came[start]]
    while path[0].source != start:
        path.insert(0, came[path[0].source])
    return path


def describe(path: list[Edge]) -> str:
    return " -> ".join([path[0].source] + [f"{e.target} ({e.where})" for e in path])


def test_no_import_circle_in_anet_or_dispatcher() -> None:
    found = circles(edges(ROOT))
    assert not found, "import circles:\n" + "\n".join(describe(c) for c in found)


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A package with one circle of each kind: the walk must report each, named."""
    files = {
        "pkg/__init__.py": "from .a import A\n__version__ = '1'\n",
        "pkg/a.py": "from . import __version__\nA = 1\n",  # a name of pkg: pkg/__init__
        "pkg/b.py": "from .c import C\n",
        "pkg/c.py": "def f():\n    from .b import B\n",  # late, in a function
        "pkg/d.py": "import pkg.sub.e\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/e.py": "from .. import d\n",  # absolute one way, two levels up the other
        "pkg/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .g import G\n",
        "pkg/g.py": "from .f import F\n",  # closed only by a type-only import: no circle
        "pkg/h.py": "if TYPE_CHECKING:\n    pass\nelse:\n    from .i import I\n",
        "pkg/i.py": "from .h import H\n",  # the else of `if TYPE_CHECKING` runs
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = sorted(describe(c) for c in circles(edges(tmp_path, ("pkg",))))
    assert found == [
        "pkg -> pkg.a (pkg/__init__.py:1) -> pkg (pkg/a.py:1)",
        "pkg.b -> pkg.c (pkg/b.py:1) -> pkg.b (pkg/c.py:2 in a function)",
        "pkg.d -> pkg.sub.e (pkg/d.py:1) -> pkg.d (pkg/sub/e.py:1)",
        "pkg.h -> pkg.i (pkg/h.py:4) -> pkg.h (pkg/i.py:1)",
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_seen(package: str) -> None:
    """The walk reads the modules the packages really have (a wrong root would find none)."""
    names = module_names(ROOT, PACKAGES)
    assert package in names and len([n for n in names if n.startswith(package + ".")]) >= 5


FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("dispatcher", ("dispatcher",)),
    ("leaves", ("anet.errors", "anet.logs", "anet.printable", "anet._version")),
    ("core", ("anet.core",)),
    ("remote", ("anet.remote",)),
    ("deps", ("anet.deps",)),
    ("streams", ("anet.streams",)),
    ("top", ("anet.api", "anet.drive", "anet.runs", "anet.housekeeping", "anet.results")),
    ("views", ("anet.views",)),
    ("pool", ("anet.pool",)),
    ("cli", ("anet.cli", "anet.__main__", "anet")),
]
"""docs/architecture.md's table, bottom up: a module may import its own floor and those below.
The package `anet` itself (its `__init__`) re-exports the public API, so it sits on top."""


def floor_of(module: str) -> int:
    best = max(
        (len(prefix), rank)
        for rank, (_, prefixes) in enumerate(FLOORS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    )
    return best[1]


def test_floors_import_only_their_own_and_those_below() -> None:
    upward = [
        f"{e.source} ({FLOORS[floor_of(e.source)][0]}) imports {e.target}"
        f" ({FLOORS[floor_of(e.target)][0]}) at {e.where}"
        for e in edges(ROOT)
        if floor_of(e.target) > floor_of(e.source)
    ]
    assert not upward, "imports up the floors:\n" + "\n".join(upward)
