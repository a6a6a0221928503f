"""Bad input to predict/promote/status/rollback: one clear message, nothing created or changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs import COMMAND_CASES, CommandCase, run_command_case
from tests.test_bad_inputs import snapshot


@pytest.mark.parametrize("case", COMMAND_CASES, ids=[c.name for c in COMMAND_CASES])
def test_command_input_is_refused_clearly_and_nothing_is_created(case: CommandCase, tmp_path: Path) -> None:
    root = tmp_path / "case"
    root.mkdir()
    code, message = run_command_case(case, root)
    assert code == 2, message
    assert message.startswith(f"aepipe {case.command}: error: "), message
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message
    assert not list(tmp_path.rglob("mlflow.db")), "a store was created"
    before = snapshot(root)
    code_again, message_again = run_command_case(case, tmp_path / "again")
    assert (code_again, message_again.split(": error: ")[0]) == (2, f"aepipe {case.command}")
    assert snapshot(root) == before  # the first case's files are untouched by running it again
