"""What a reviewer reads as text: the comparison to the champion in each registered version's
description, and `aepipe status` (README "Review, promotion, rollback"). Pure functions on
hand-made inputs; no server."""

from __future__ import annotations

from typing import Any

from aepipe.cli import status_text
from aepipe.tracking.review import Champion, comparison, description

DATA = "a1b2c3d4e5f6" + "0" * 52
OTHER = "ffeeddccbbaa" + "9" * 52


def test_comparison_without_a_champion_says_it_would_be_the_first() -> None:
    text = comparison("test_accuracy", 0.91, None, DATA)
    assert "No champion yet" in text and "first" in text


def test_comparison_on_the_same_data_gives_both_numbers_and_the_signed_difference() -> None:
    better = comparison("test_accuracy", 0.9312, Champion("4", 0.9050, DATA), DATA)
    assert "test_accuracy" in better and "v4" in better
    assert "93.12%" in better and "90.50%" in better
    assert "+2.62 points" in better and "better than" in better

    worse = comparison("test_accuracy", 0.8800, Champion("7", 0.9050, DATA), DATA)
    assert "88.00%" in worse and "90.50%" in worse and "v7" in worse
    assert "-2.50 points" in worse and "worse than" in worse

    equal = comparison("test_accuracy", 0.9050, Champion("7", 0.9050, DATA), DATA)
    assert "+0.00 points" in equal and "equal to" in equal
    assert "better" not in equal and "worse" not in equal


def test_comparison_with_a_champion_on_other_data_says_not_comparable() -> None:
    text = comparison("test_accuracy", 0.93, Champion("2", 0.40, OTHER), DATA)
    assert "v2" in text and "other data" in text and "not comparable" in text
    assert OTHER[:12] in text
    # no numbers that invite a comparison
    assert "points" not in text and "40.00%" not in text


def test_version_description_holds_metrics_selection_and_the_comparison() -> None:
    summary = {
        "variant": "vae_joint",
        "head": "logreg",
        "dataset": "digits",
        "data_hash": DATA,
        "labels_used": 30,
        "pretrain_uses_labels": True,
    }
    evaluation = {
        "test_accuracy": 0.9312,
        "test_macro_f1": 0.9201,
        "val_accuracy": 0.9400,
        "test_recon_mse": 0.01234,
    }
    champ = Champion("4", 0.9050, DATA)
    text = description(summary, evaluation, champ, "test_accuracy", selection="best of 3 by val_accuracy")
    assert comparison("test_accuracy", 0.9312, champ, DATA) in text
    assert "+2.62 points" in text
    assert "93.12%" in text and "92.01%" in text and "94.00%" in text and "0.01234" in text
    assert "best of 3 by val_accuracy" in text
    first = description(summary, evaluation, None, "test_accuracy")
    assert "No champion yet" in first


def _status_report() -> dict[str, Any]:
    """The shape `aepipe.tracking.promotion.status` returns, every part present."""
    return {
        "model": "aepipe-digits",
        "aliases": {"champion": "3", "challenger": "5", "previous-champion": "2"},
        "encoder_aliases": {"champion": "13", "challenger": "15"},
        "last_registration": {
            "at": "2025-01-02T03:04:05Z",
            "version": "5",
            "status": "created",
            "outcome": "registered v5 as challenger",
        },
        "warnings": ["champion v3 was set outside `aepipe promote`"],
        "versions": [
            {
                "version": "5",
                "aliases": ["challenger"],
                "registration": "complete",
                "source_run": "0123456789abcdef",
                "variant": "vae_joint",
                "head": "logreg",
                "labels_used": "30",
                "val_accuracy": "0.940000",
                "test_accuracy": "0.931200",
                "gate": {"result": "refused", "summary": "+1 image(s) below the margin of 2"},
                "audit": None,
            },
            {
                "version": "3",
                "aliases": ["champion"],
                "registration": "complete",
                "source_run": "fedcba9876543210",
                "variant": "mae",
                "head": "mlp",
                "labels_used": "100",
                "val_accuracy": "0.950000",
                "test_accuracy": "0.940000",
                "gate": {"result": "passed", "summary": "McNemar p=0.01"},
                "audit": {
                    "promoted_at": "2025-01-01T00:00:00Z",
                    "promoted_by": "alice",
                    "promotion_reason": "passed the gate",
                    "previous_champion": "2",
                },
            },
            {
                "version": "4",
                "aliases": [],
                "registration": "pending",
                "source_run": None,
                "variant": "vae",
                "head": "logreg",
                "labels_used": "10",
                "val_accuracy": None,
                "test_accuracy": None,
                "gate": None,
                "audit": None,
            },
        ],
    }


def test_status_text_shows_aliases_registration_gate_audit_and_warnings() -> None:
    text = status_text(_status_report())
    lines = text.splitlines()

    def shown(*parts: str) -> bool:
        return any(all(part in line for part in parts) for line in lines)

    # aliases of the pair and of its encoder
    assert "aepipe-digits: challenger -> v5, champion -> v3, previous-champion -> v2" in lines, text
    assert "aepipe-digits-encoder: challenger -> v15, champion -> v13" in lines, text
    # last registration: when and what happened
    assert shown("last registration", "2025-01-02T03:04:05Z", "registered v5 as challenger"), text
    # gate results, per version
    assert shown("gate: refused", "below the margin of 2"), text
    assert shown("gate: passed", "McNemar p=0.01"), text
    # audit trail
    for part in ("promoted_by: alice", "promoted_at: 2025-01-01T00:00:00Z", "previous_champion: 2"):
        assert shown(part), (part, text)
    # warnings
    assert shown("WARNING", "champion v3 was set outside `aepipe promote`"), text
    # versions with their aliases, and an unfinished registration called out
    assert any(line.startswith("v5 [challenger]") and "run=01234567" in line for line in lines), text
    assert any(line.startswith("v3 [champion]") for line in lines), text
    assert any(line.startswith("v4 (registration pending)") for line in lines), text


def test_status_text_with_nothing_held() -> None:
    report = _status_report() | {
        "aliases": {},
        "encoder_aliases": {},
        "last_registration": None,
        "warnings": [],
        "versions": [],
    }
    assert status_text(report).splitlines() == ["aepipe-digits: (none)", "aepipe-digits-encoder: (none)"]
