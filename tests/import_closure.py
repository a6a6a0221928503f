"""Static import closure of a module inside the ``aepipe`` package (for the dvc.yaml deps test).

Every ``import``/``from ... import`` anywhere in a module counts, lazy imports inside functions
included (``if TYPE_CHECKING:`` blocks excluded: they never run). Importing ``aepipe.a.b`` also
runs ``aepipe/__init__.py`` and ``aepipe/a/__init__.py``, so those count too. Over-approximate on
purpose: a branch not taken today (another ``classifier.head``) is still code the stage may run
after a params change, which DVC would not notice if the file were missing from its deps.

No dynamic import reaches stage code other than the stage module itself (the head trainers are
plain imports in ``aepipe.training.trainers``); :func:`dynamic_imports` lists every
``importlib.import_module`` call site so a new one cannot slip past the test unexamined.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_file(name: str, src: Path = SRC) -> Path | None:
    path = src.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def dynamic_imports(src: Path = SRC) -> set[str]:
    """Modules of ``aepipe`` that call ``importlib.import_module`` (relative paths)."""
    found = set()
    for path in sorted((src / "aepipe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
            ):
                found.add(str(path.relative_to(src.parent)))
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    """ast.walk without the bodies of `if TYPE_CHECKING:` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo += node.orelse  # type: ignore[attr-defined]  # an ast.If (_is_type_checking checked it)
        else:
            todo += ast.iter_child_nodes(node)


def _named(node: ast.AST, package: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        return {base} | {f"{base}.{a.name}" for a in node.names}
    return set()


def direct_imports(name: str, src: Path = SRC) -> set[str]:
    """The ``aepipe`` modules ``name`` imports (and their parent packages)."""
    path = module_file(name, src)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in _walk(tree):
        found |= _named(node, package)
    modules = set()
    for dotted in found:
        if dotted != "aepipe" and not dotted.startswith("aepipe."):
            continue
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):  # the parent packages' __init__ run first
            if module_file(".".join(parts[:i]), src):
                modules.add(".".join(parts[:i]))
    return modules


def closure(root: str, src: Path = SRC) -> set[Path]:
    """Files (relative to the repository) of every module ``root`` may import, itself included."""
    seen: set[str] = set()
    parts = root.split(".")
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # importing root runs its packages
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += direct_imports(name, src)
    # every module in seen was found on disk by direct_imports, so module_file is not None
    return {module_file(m, src).relative_to(src.parent) for m in seen}  # type: ignore[union-attr]
