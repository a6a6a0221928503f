"""Every bad input is refused with a clear message, and what was already written stays intact."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from aepipe.config import parse_params
from aepipe.stages import prepare
from tests.bad_inputs import CASES, Case, run_case


def snapshot(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def good_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good") / "prepared"
    prepare.run(parse_params({}), out)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_clearly_and_nothing_is_overwritten(
    case: Case, good_output: Path, tmp_path: Path
) -> None:
    before = snapshot(good_output)
    start = time.monotonic()
    code, message = run_case(case, tmp_path, good_output)
    elapsed = time.monotonic() - start
    assert code == 2, message
    assert message.startswith(f"aepipe {case.stage}: error: ")
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert snapshot(good_output) == before
    assert not [
        p for p in good_output.parent.iterdir() if p.name.startswith(".prepared")
    ]  # no temp leftovers


def test_the_table_has_at_least_15_rows() -> None:
    assert len(CASES) >= 15
