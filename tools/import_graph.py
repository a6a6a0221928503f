"""The import structure of src/aepipe, from the code itself (grimp): a layer picture, and a check.

    python tools/import_graph.py            # the picture CONTRIBUTING.md shows (tests/test_layers.py
                                            # fails when the two differ)
    python tools/import_graph.py --check    # exit 1, naming them, on any import cycle

Every import counts: module level, inside functions (lazy), and under ``if TYPE_CHECKING:``.
The check fails on

* a cycle between modules (``a`` imports ``b`` ... imports ``a``);
* a cycle between the units of the picture (the top-level modules and subpackages of aepipe:
  ``models`` importing ``training`` while ``training`` imports ``models`` is one);
* a library module importing the command line (only ``cli`` and ``pipeline_cli`` may).

``importlib.import_module`` calls are invisible to it; tests/test_dvc_deps.py lists every one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

CLI = ("cli", "pipeline_cli")  # the command line: nothing else may import these


def build(package: str):
    import grimp

    return grimp.build_graph(
        package, include_external_packages=False, exclude_type_checking_imports=False, cache_dir=None
    )


def unit(package: str, module: str) -> str:
    """``aepipe.models.vae`` -> ``models``; the package's own ``__init__`` is ``(package)``."""
    rest = module[len(package) + 1 :].split(".")[0] if module != package else ""
    return rest or f"({package})"


def module_cycles(graph, modules: Iterable[str]) -> list[list[str]]:
    """One shortest cycle through each direct import that closes one, deduplicated."""
    seen, cycles = set(), []
    for importer in sorted(modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain and frozenset(chain) not in seen:
                seen.add(frozenset(chain))
                cycles.append([importer, *chain])
    return cycles


def unit_edges(package: str, graph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for importer in graph.modules:
        a = unit(package, importer)
        edges.setdefault(a, set())
        for imported in graph.find_modules_directly_imported_by(importer):
            b = unit(package, imported)
            if a != b:
                edges[a].add(b)
    return edges


def unit_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each unit on a cycle, with one cycle through it (depth-first search)."""
    cycles, seen = [], set()
    for start in sorted(edges):
        stack = [(start, [start])]
        visited: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        cycles.append([*path, start])
                elif nxt not in visited:
                    visited.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return cycles


def cli_imports(package: str, graph) -> list[str]:
    cli = {f"{package}.{name}" for name in CLI}
    bad = []
    for target in sorted(cli & set(graph.modules)):
        for importer in sorted(graph.find_modules_that_directly_import(target)):
            if importer not in cli:
                bad.append(f"{importer} imports {target}")
    return bad


def problems(package: str) -> list[str]:
    graph = build(package)
    out = [f"module cycle: {' -> '.join(c)}" for c in module_cycles(graph, graph.modules)]
    out += [f"layer cycle: {' -> '.join(c)}" for c in unit_cycles(unit_edges(package, graph))]
    out += [f"library code imports the CLI: {line}" for line in cli_imports(package, graph)]
    return out


def levels(edges: dict[str, set[str]]) -> dict[str, int]:
    """0 for a unit that imports no other unit, else 1 + the highest level it imports."""
    level: dict[str, int] = {}

    def of(node: str, trail: tuple[str, ...] = ()) -> int:
        if node in trail:
            raise SystemExit(f"layer cycle: {' -> '.join((*trail, node))}; run with --check")
        if node not in level:
            level[node] = 1 + max((of(n, (*trail, node)) for n in edges.get(node, ())), default=-1)
        return level[node]

    for node in edges:
        of(node)
    return level


def picture(package: str) -> str:
    """The units of ``package`` by layer, top (the command line) to bottom, and what each imports."""
    graph = build(package)
    edges = unit_edges(package, graph)
    level = levels(edges)
    size = {u: sum(1 for m in graph.modules if unit(package, m) == u) for u in edges}
    width = max(len(u) for u in edges) + 5
    lines = []
    for lv in sorted(set(level.values()), reverse=True):
        for u in sorted(n for n in edges if level[n] == lv):
            name = f"{u}/" if size[u] > 1 else u
            deps = " ".join(sorted(edges[u])) or "-"
            lines.append(f"{lv:>2}  {name:<{width}} -> {deps}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="aepipe", help="an importable package (default: aepipe)")
    parser.add_argument(
        "--check", action="store_true", help="fail (exit 1) on an import cycle or a CLI import"
    )
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.package)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            return 1
        print(
            f"{args.package}: no import cycle (lazy and TYPE_CHECKING imports included), "
            "no library import of the CLI"
        )
        return 0
    print(picture(args.package))
    return 0


if __name__ == "__main__":
    sys.exit(main())
