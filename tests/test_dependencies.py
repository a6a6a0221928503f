"""Every third-party package the code imports is declared, and every declared one is pinned.

A package that only arrives because another one depends on it today (kubernetes through kfp,
requests through mlflow) disappears the day that dependency changes its own list; the image and a
`pip install aepipe` elsewhere would then fail at import time in a stage nobody ran.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.conftest import REPO


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_roots(folder: Path) -> set[str]:
    roots: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return {
        r
        for r in roots
        if r not in sys.stdlib_module_names and r not in ("aepipe", "components", "pipelines")
    }


def _declared() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in deps}


def _pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(re.sub(r"\[.*\]", "", name))] = version
    return pins


def test_every_imported_package_is_a_declared_dependency() -> None:
    dists = packages_distributions()
    declared = _declared()
    missing = {}
    for folder in ("src/aepipe", "components", "pipelines"):
        for root in sorted(_imported_roots(REPO / folder)):
            names = {_norm(d) for d in dists.get(root, [])}
            assert names, f"{folder} imports {root!r}, which no installed distribution provides"
            if not names & declared:
                missing[root] = sorted(names)
    assert not missing, f"imported but not in pyproject [project].dependencies: {missing}"


def test_every_declared_dependency_has_an_exact_pin() -> None:
    pins = _pinned(REPO / "requirements.txt")
    unpinned = sorted(d for d in _declared() if not pins.get(d))
    assert not unpinned, f"declared in pyproject.toml but not pinned (==) in requirements.txt: {unpinned}"
