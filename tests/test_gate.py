"""The promotion gate's verdicts, each faulted on purpose against a real MLflow server: a
challenger better by too few images to be significant, a tie, one short of the margin, and one
that passes; `promotion_alpha: 1.0` turning the significance check off. Versions carry hand-made
per-image test predictions, so the McNemar counts and p-values are known exactly."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aepipe.errors import TrackingError
from aepipe.tracking.gate import mcnemar_exact
from aepipe.tracking.promotion import promote, rollback

N = 200  # test images
_names = itertools.count()


def test_mcnemar_exact_matches_hand_computed_binomial_tails() -> None:
    # b only-challenger, c only-champion: two-sided exact p = 2 * P(X <= min(b, c)), X ~ Bin(b + c, 1/2)
    for b, c, p in ((3, 0, 0.25), (6, 0, 2 / 64), (8, 2, 2 * (1 + 10 + 45) / 1024), (5, 5, 1.0), (0, 0, 1.0)):
        both = 20 - b - c  # images both get right
        challenger = np.array([True] * b + [False] * c + [True] * both + [False] * 4)
        champion = np.array([False] * b + [True] * c + [True] * both + [False] * 4)
        assert mcnemar_exact(challenger, champion) == (b, c, pytest.approx(p)), (b, c)


@pytest.fixture
def client(tracking_env: str) -> Any:
    """The gate's mlflow.models.evaluate logs through the global tracking URI: tracking_env sets it."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_env, registry_uri=tracking_env)


def register_pair(
    client: Any,
    tmp_path: Path,
    right: list[int],
    hashes: tuple[str, str] = ("d" * 64, "d" * 64),
    labels_of_v2: np.ndarray | None = None,
) -> tuple[str, str, str]:
    """A new registered model whose v1 (champion) and v2 (challenger) get right the first
    right[0] and right[1] of N test images, the rest wrong; returns (name, v1, v2). ``hashes``:
    each version's data hash tag; ``labels_of_v2``: other test labels for v2's predictions file."""
    name = f"gate-test-{next(_names)}"
    client.create_registered_model(name)
    exp = client.get_experiment_by_name("gate-test") or client.get_experiment(
        client.create_experiment("gate-test")
    )
    versions = []
    for n_right, data_hash, labels in zip(
        right,
        hashes,
        (np.arange(N) % 10, labels_of_v2 if labels_of_v2 is not None else np.arange(N) % 10),
        strict=True,
    ):
        pred = np.where(np.arange(N) < n_right, labels, (labels + 1) % 10)
        run = client.create_run(exp.experiment_id)
        csv = tmp_path / f"{run.info.run_id}/test_predictions.csv"
        csv.parent.mkdir(parents=True)
        csv.write_text(
            "index,label,prediction\n"
            + "".join(f"{i},{a},{p}\n" for i, (a, p) in enumerate(zip(labels, pred, strict=True)))
        )
        client.log_artifact(run.info.run_id, str(csv), "review")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            name, f"{run.info.artifact_uri}/review", run.info.run_id, tags={"aepipe.data_hash": data_hash}
        )
        versions.append(str(mv.version))
    client.set_registered_model_alias(name, "champion", versions[0])
    return name, versions[0], versions[1]


def gate(client: Any, tmp_path: Path, right: list[int], margin: float = 0.0, alpha: float = 0.05) -> Any:
    name, v1, v2 = register_pair(client, tmp_path, right)
    decision = promote(client, name, "test_accuracy", margin, version=v2, alpha=alpha, experiment="gate-test")
    champion = client.get_registered_model(name).aliases["champion"]
    return decision, champion, client.get_model_version(name, v2).tags, (v1, v2)


def test_better_by_three_images_is_refused_as_not_significant(client: Any, tmp_path: Path) -> None:
    decision, champion, tags, (v1, _) = gate(client, tmp_path, [180, 183])
    assert decision.outcome == "refused" and champion == v1
    assert (
        "better, but not significantly (p=0.25 > alpha 0.05): the difference may be chance"
        in decision.message
    )
    assert tags["aepipe.gate.result"] == "refused"
    assert (tags["aepipe.gate.only_challenger_right"], tags["aepipe.gate.only_champion_right"]) == ("3", "0")
    assert float(tags["aepipe.gate.mcnemar_p"]) == 0.25


def test_alpha_one_turns_the_significance_check_off(client: Any, tmp_path: Path) -> None:
    decision, champion, tags, (_, v2) = gate(client, tmp_path, [180, 183], alpha=1.0)
    assert decision.outcome == "promoted" and champion == v2
    assert tags["aepipe.gate.result"] == "passed" and float(tags["aepipe.gate.mcnemar_p"]) == 0.25


def test_a_significant_gain_passes(client: Any, tmp_path: Path) -> None:
    decision, champion, tags, (v1, v2) = gate(client, tmp_path, [180, 186])
    assert decision.outcome == "promoted" and champion == v2
    assert float(tags["aepipe.gate.mcnemar_p"]) == pytest.approx(2 / 64)
    assert tags["aepipe.gate.challenger_test_accuracy"] == "0.930000"
    assert tags["aepipe.gate.champion_test_accuracy"] == "0.900000"
    # the README's "one `gate ...` run in the experiment with a nested run per model"
    run = client.get_run(tags["aepipe.gate.run_id"])
    assert run.data.tags["aepipe.kind"] == "gate" and run.info.run_name.endswith(f"v{v2} vs champion v{v1}")
    nested = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in nested) == sorted([f"challenger v{v2}", f"champion v{v1}"])


def refused_unpaired(client: Any, tmp_path: Path, **kw: Any) -> tuple[Any, str, dict[str, str], str]:
    """A clear gain (186 vs 180 right) that must still be refused: the pair cannot be compared."""
    name, v1, v2 = register_pair(client, tmp_path, [180, 186], **kw)
    decision = promote(client, name, "test_accuracy", 0.0, version=v2, alpha=0.05, experiment="gate-test")
    assert decision.outcome == "refused"
    assert client.get_registered_model(name).aliases["champion"] == v1  # the champion stays
    tags = client.get_model_version(name, v2).tags
    assert tags["aepipe.gate.result"] == "refused" and "aepipe.gate.mcnemar_p" not in tags
    return decision, v1, tags, v2


def test_versions_scored_on_different_data_are_refused(client: Any, tmp_path: Path) -> None:
    decision, *_ = refused_unpaired(client, tmp_path, hashes=("d" * 64, "e" * 64))
    assert "evaluated on different data (challenger eeeeeeeeeeee, champion dddddddddddd)" in decision.message


def test_the_same_data_hash_with_other_test_labels_is_refused(client: Any, tmp_path: Path) -> None:
    decision, v1, _, v2 = refused_unpaired(client, tmp_path, labels_of_v2=(np.arange(N) + 3) % 10)
    assert f"v{v2} and v{v1} were scored on different test images (labels differ" in decision.message


def test_a_tie_keeps_the_champion_and_says_so(client: Any, tmp_path: Path) -> None:
    decision, champion, tags, (v1, _) = gate(client, tmp_path, [180, 180])
    assert decision.outcome == "refused" and champion == v1
    assert "tie: both reach test_accuracy 0.9000, so the champion stays" in decision.message
    assert tags["aepipe.gate.only_challenger_right"] == "0" and tags["aepipe.gate.mcnemar_p"] == "1"


def test_a_significant_gain_within_the_margin_is_refused(client: Any, tmp_path: Path) -> None:
    decision, champion, _, (v1, _) = gate(client, tmp_path, [180, 186], margin=0.05)
    assert decision.outcome == "refused" and champion == v1
    assert "not better than the champion by the margin" in decision.message
    assert "margin 0.0500" in decision.message


def test_the_cli_promotes_the_configured_alias_and_exits_1_on_a_refusal(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aepipe promote` reads mlflow.alias (what register gives new versions), not a fixed name,
    and clears it from the promoted version; a refusal is exit status 1."""
    import yaml

    from aepipe.cli import main

    name, v1, v2 = register_pair(client, tmp_path, [180, 183])
    client.set_registered_model_alias(name, "candidate", v2)
    params = tmp_path / "params.yaml"
    mlflow = {"alias": "candidate", "model_name": name, "experiment": "gate-test"}
    params.write_text(yaml.safe_dump({"mlflow": mlflow}))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(params), "promote"]) == 1  # 3 images better: not significant
    assert client.get_registered_model(name).aliases == {"champion": v1, "candidate": v2}
    params.write_text(yaml.safe_dump({"mlflow": {**mlflow, "promotion_alpha": 1.0}}))
    assert main(["--params", str(params), "promote"]) == 0
    held = client.get_registered_model(name).aliases
    assert held["champion"] == v2 and "candidate" not in held and held["previous-champion"] == v1


def test_rollback_steps_back_through_the_promotions_once_and_stops(client: Any, tmp_path: Path) -> None:
    """v1, then v2, then v1 again (forced): rollbacks go to v2, then to the first v1, then there is
    nothing left. Each version's own "previous champion" tag is overwritten when it is promoted
    twice, which made rollbacks alternate v2, v1, v2, ... for ever; the model's history does not."""
    name, v1, v2 = register_pair(client, tmp_path, [180, 190])
    assert promote(client, name, "test_accuracy", 0.0, version=v2, experiment="gate-test").promoted
    again = promote(
        client, name, "test_accuracy", 0.0, version=v1, force=True, reason="test", experiment="gate-test"
    )
    assert again.promoted and client.get_registered_model(name).aliases["previous-champion"] == v2

    first = rollback(client, name)
    assert (first.version, first.previous) == (v2, v1)
    assert client.get_registered_model(name).aliases == {"champion": v2, "previous-champion": v1}
    second = rollback(client, name)
    assert (second.version, second.previous) == (v1, v2)
    assert client.get_registered_model(name).aliases == {"champion": v1}
    with pytest.raises(TrackingError, match="nothing to roll back to"):
        rollback(client, name)
    # a previous-champion set by hand (UI) is what the next rollback goes to, and the chain then
    # does not point back at the version it leaves
    client.set_registered_model_alias(name, "previous-champion", v2)
    by_hand = rollback(client, name)
    assert (by_hand.version, by_hand.previous) == (v2, v1)
    assert client.get_registered_model(name).aliases == {"champion": v2}
