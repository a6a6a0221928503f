"""Every bad input is refused with a clear message, and what was already written stays intact:
every file of a workspace where the whole pipeline ran, and its MLflow registry."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.bad_inputs import (
    CASES,
    Case,
    build_workspace,
    copy_workspace,
    registry_state,
    run_case,
    setup_case,
)

STORE = ("mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db-shm")  # runs are logged there


def snapshot(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name not in STORE
    }


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("golden") / "ws")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_clearly_and_nothing_is_overwritten(
    case: Case, golden: Path, tmp_path: Path
) -> None:
    if reason := case.skip():
        pytest.skip(reason)
    ws = copy_workspace(golden, tmp_path / "ws")
    setup_case(case, ws)
    files, registry = snapshot(ws), registry_state(ws)
    assert registry, "the workspace has a registered model to protect"
    start = time.monotonic()
    code, message = run_case(case, ws)
    elapsed = time.monotonic() - start
    assert code == 2, message
    assert message.startswith(f"aepipe {case.stage}: error: ")
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert snapshot(ws) == files
    assert registry_state(ws) == registry
    assert not [p for p in ws.rglob(".*") if ".tmp" in p.name or ".old-" in p.name]  # no temp leftovers


def test_the_table_has_at_least_45_rows() -> None:
    assert len(CASES) >= 45
