"""Package layout: the import graph of ``src/datadiet`` has no circles, and lower layers never
import higher ones.

The graph is built statically with :mod:`ast`: every ``import`` / ``from ... import`` of a
``datadiet`` module anywhere in a file counts, including function-level (lazy) imports and
imports under ``if TYPE_CHECKING:``, because a lazy import that closes a circle is still a
circle of the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "datadiet"
SRC = Path(__file__).resolve().parents[1] / "src" / PKG

# Lower layers and the higher modules they must never import (prefix ``x.`` = the package
# ``x`` and everything under it).
LOWER = ("datadiet.functional.", "datadiet.core.", "datadiet.methods.")
HIGHER = (
    "datadiet.runner",
    "datadiet.config",
    "datadiet.bench.",
    "datadiet.cli.",
    "datadiet.integrations.",
    "datadiet.demo",
)


def _module_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _in(mod: str, spec: str) -> bool:
    """``mod`` matches ``spec``: a dotted prefix ending in ``.`` covers the package and all its
    submodules, otherwise the name must match exactly."""
    if spec.endswith("."):
        return mod == spec[:-1] or mod.startswith(spec)
    return mod == spec


def imports_of(mod: str, source: str, modules: set[str], *, is_pkg: bool = False) -> set[str]:
    """The ``datadiet`` modules that module ``mod`` (its text: ``source``) imports, anywhere in it."""
    package = mod if is_pkg else mod.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        # a name that is not a module of the package (a missing or renamed one): its nearest
        # existing parent package
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != mod:
            found.add(name)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PKG or alias.name.startswith(PKG + "."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            if not (base == PKG or base.startswith(PKG + ".")):
                continue
            for alias in node.names:
                # ``from .pkg import name``: the module ``pkg.name`` if there is one, else ``pkg``
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base)
    return found


def build_graph() -> dict[str, set[str]]:
    """Module -> the set of ``datadiet`` modules it imports (anywhere in the file).

    Package ``__init__`` modules are nodes like any other (``datadiet.core.selection`` is
    ``selection/__init__.py``); none of their re-export edges is left out.
    """
    files = _module_files()
    modules = set(files)
    return {mod: imports_of(mod, path.read_text(encoding="utf-8"), modules, is_pkg=path.name == "__init__.py")
            for mod, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module, each reported as one
    concrete circle through it (``a -> b -> ... -> a``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in sccs:
        members = set(comp)
        start = comp[0]
        # Shortest circle back to ``start`` inside the component (BFS).
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v is not None and v != start:
            path.append(v)
            v = prev[v]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def _fmt(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(c) for c in cycles)


def test_imports_of_resolves_relative_lazy_and_from_imports():
    modules = {"datadiet", "datadiet.a", "datadiet.a.b", "datadiet.a.c", "datadiet.d", "datadiet.e"}
    src = (
        "import os\n"
        "import datadiet.d\n"
        "from . import c\n"             # a module of the package: datadiet.a.c
        "from . import helper\n"        # a name in datadiet/a/__init__.py: datadiet.a
        "from .. import __version__\n"  # datadiet
        "def f():\n"
        "    from ..e import thing\n"   # lazy, inside a function
        "    import numpy\n"
        "class K:\n"
        "    def g(self):\n"
        "        from datadiet.missing import x\n"  # not a module: its package, datadiet
    )
    got = imports_of("datadiet.a.b", src, modules)
    assert got == {"datadiet.d", "datadiet.a.c", "datadiet.a", "datadiet", "datadiet.e"}
    # in a package's __init__, ``from . import x`` is relative to the package itself
    assert imports_of("datadiet.a", "from . import b\nfrom .c import y\n", modules, is_pkg=True) == {
        "datadiet.a.b", "datadiet.a.c"}


def test_find_cycles_reports_a_concrete_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_the_package():
    graph = build_graph()
    assert {"datadiet", "datadiet.runner", "datadiet.cli.main", "datadiet.core.selection"} <= set(graph)
    assert "datadiet.cli.common" in graph["datadiet.cli.main"]


def test_no_import_cycles():
    cycles = find_cycles(build_graph())
    assert not cycles, "import cycles (each module imports the next, the last imports the first):\n" + _fmt(cycles)


def test_lower_layers_do_not_import_higher_ones():
    graph = build_graph()
    bad = sorted(
        (m, t)
        for m, targets in graph.items()
        if any(_in(m, lo) for lo in LOWER)
        for t in targets
        if any(_in(t, hi) for hi in HIGHER)
    )
    assert not bad, "lower layer imports a higher one:\n" + "\n".join(f"{m} -> {t}" for m, t in bad)


def test_core_imports_nothing_above_it():
    """``core`` may import only itself, ``functional``, ``errors`` and ``_validate``; ``methods`` never import the
    public ``datadiet.online`` namespace (it re-exports them). Methods may use the plain loop's helpers (data
    order, optimizer: scoring runs are the first steps of a run) and the model registry (sentence encoders)."""
    graph = build_graph()
    allowed = ("datadiet.core.", "datadiet.functional.", "datadiet.errors", "datadiet._validate")
    bad = sorted((m, t) for m, ts in graph.items() if _in(m, "datadiet.core.") for t in ts
                 if not any(_in(t, a) for a in allowed))
    assert not bad, "core imports a higher module:\n" + "\n".join(f"{m} -> {t}" for m, t in bad)
    above = ("datadiet.online.",)
    bad = sorted((m, t) for m, ts in graph.items() if _in(m, "datadiet.methods.") for t in ts
                 if any(_in(t, a) for a in above))
    assert not bad, "a method imports the public online namespace:\n" + "\n".join(f"{m} -> {t}" for m, t in bad)
