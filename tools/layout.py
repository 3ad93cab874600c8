"""The package's layout rules, checked: ``python -m tools.layout``.

Two rules (issue 20):

- **no import cycle** among ``chatauth`` modules, counting the imports made
  inside functions too (they only defer a cycle to the first call; they do not
  remove it). Imports under ``if TYPE_CHECKING:`` are not counted: they never
  run.
- **no module over** :data:`MAX_LINES` lines.

An edge goes to the module named by the import: ``from chatauth.oauth import
views`` is an edge to ``chatauth.oauth.views`` when that is a module, else to
``chatauth.oauth``. The ``chatauth`` package itself (its ``__init__``) is left
out: it only re-exports the public API, and every module sits under it.

Exit status 1 when a rule is broken; the cycles (each strongly connected
component, with one path round it) and the long modules are printed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "chatauth"
MAX_LINES = 450
# Not application code: generated or data.
SKIP_PARTS = {"migrations"}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        if SKIP_PARTS & set(rel.parts):
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every dotted name the module imports at run time (absolute)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (the package root left out)."""
    edges: dict[str, set[str]] = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = _imports(tree, name, path.name == "__init__.py")
        edges[name] = {t for t in targets if t in found and t != PACKAGE and t != name}
    edges.pop(PACKAGE, None)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in edges:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return result


def path_round(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One cycle through the component's first module (breadth first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def long_modules(found: dict[str, Path]) -> list[tuple[str, int]]:
    sized = ((n, len(p.read_text().splitlines())) for n, p in found.items())
    return sorted((item for item in sized if item[1] > MAX_LINES), key=lambda i: -i[1])


def main() -> int:
    found = modules()
    edges = graph(found)
    broken = False
    for component in cycles(edges):
        broken = True
        print(f"import cycle among {len(component)} modules: {', '.join(component)}")
        print("  e.g. " + " -> ".join(path_round(component, edges)))
    for name, lines in long_modules(found):
        broken = True
        print(f"{name}: {lines} lines (at most {MAX_LINES})")
    if not broken:
        print(f"{len(found)} modules: no import cycle, none over {MAX_LINES} lines")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
