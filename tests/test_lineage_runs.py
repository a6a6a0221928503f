"""How stage runs end, against a real `mlflow server`: FAILED with the stage's own error, KILLED on
Ctrl-C, stale RUNNING runs of an execution closed when it runs again; the default store's root."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from aepipe.config import parse_params
from aepipe.tracking import lineage

PARAMS = parse_params({"mlflow": {"experiment": "lineage-runs"}, "seed": 7})


def test_stage_runs_end_with_the_status_of_what_happened(tracking_env: str) -> None:
    client = MlflowClient(tracking_env)
    with (
        pytest.raises(ValueError, match="the stage's own error") as caught,
        lineage.stage_run("train", PARAMS) as tracker,
    ):
        failed = tracker.run_id
        raise ValueError("the stage's own error")
    assert caught.value.__context__ is None and not getattr(caught.value, "__notes__", None)
    assert client.get_run(failed).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt), lineage.stage_run("train", PARAMS) as tracker:
        killed = tracker.run_id
        raise KeyboardInterrupt
    assert client.get_run(killed).info.status == "KILLED"

    # a process that died mid-stage left its run RUNNING: the next stage of the execution closes it
    with lineage.stage_run("extract", PARAMS) as tracker:
        parent = tracker.parent_run_id
        exp = tracker.experiment_id
    orphan = client.create_run(exp, run_name="pretrain", tags={"mlflow.parentRunId": parent}).info.run_id
    with lineage.stage_run("train", PARAMS) as tracker:
        assert tracker.parent_run_id == parent
    assert client.get_run(orphan).info.status == "KILLED"
    assert "interrupted process" in client.get_run(orphan).data.tags["aepipe.closed_because"]

    # the parent run: readable name, effective params only
    run = client.get_run(parent)
    assert run.info.run_name.startswith("vae_joint+linear labels=all @")
    assert "model.vae_joint.lam" in run.data.params and "classifier.linear.c_grid" in run.data.params
    assert not [k for k in run.data.params if k.startswith(("model.mae.", "classifier.mlp.", "kubeflow."))]


def test_default_store_is_the_project_root_from_a_subdirectory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "deep")
    assert lineage.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(lineage.TrackingError, match="no MLflow store at"):
        lineage.require_store()
    assert not list(tmp_path.rglob("mlflow.db"))


def test_a_queued_dvc_experiment_tracks_into_the_project_store(tmp_path: Path, monkeypatch) -> None:
    """`dvc exp run --queue/--temp` runs stages in <project>/.dvc/tmp/exps/<tmp> (DVC_ROOT): they
    land in <project>/mlflow.db, not in the temporary copy DVC deletes afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path / "proj"
    temp_copy = project / ".dvc" / "tmp" / "exps" / "tmpk2x9"
    temp_copy.mkdir(parents=True)
    (temp_copy / "dvc.yaml").write_text("stages: {}\n")  # the copy is a project of its own too
    monkeypatch.chdir(temp_copy)
    monkeypatch.setenv("DVC_ROOT", str(temp_copy))
    assert lineage.project_root() == project.resolve()
    assert lineage.tracking_uri() == f"sqlite:///{project.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "other"))  # a plain `dvc repro`: its own root
    assert lineage.project_root() == (tmp_path / "other").resolve()


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_without_a_checkout_the_commit_comes_from_the_image(tmp_path: Path, monkeypatch) -> None:
    """The component image holds no .git: `make image` bakes the commit in (AEPIPE_GIT_COMMIT),
    and runs in it carry that commit instead of none (run names ended in @no-git)."""
    monkeypatch.delenv("AEPIPE_GIT_COMMIT", raising=False)
    monkeypatch.delenv("AEPIPE_GIT_DIRTY", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path counts
    assert lineage.git_info(str(tmp_path)) == {}
    assert lineage.run_title(PARAMS, {}).endswith("@no-git")

    monkeypatch.setenv("AEPIPE_GIT_COMMIT", COMMIT)
    monkeypatch.setenv("AEPIPE_GIT_DIRTY", "false")
    tags = lineage.git_info(str(tmp_path))
    assert tags == {
        "mlflow.source.git.commit": COMMIT,
        "aepipe.git_commit": COMMIT,
        "aepipe.git_dirty": "false",
    }
    assert lineage.run_title(PARAMS, tags).endswith(f"@{COMMIT[:7]}")
    monkeypatch.setenv("AEPIPE_GIT_DIRTY", "true")
    assert lineage.run_title(PARAMS, lineage.git_info(str(tmp_path))).endswith(f"@{COMMIT[:7]}+dirty")
    for bad in ("", "main", COMMIT[:7], COMMIT.upper()):  # not a full commit id: no lineage invented
        monkeypatch.setenv("AEPIPE_GIT_COMMIT", bad)
        assert lineage.git_info(str(tmp_path)) == {}


def test_a_checkout_wins_over_the_environment(monkeypatch) -> None:
    import subprocess

    monkeypatch.setenv("AEPIPE_GIT_COMMIT", COMMIT)
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("this copy of the project is not a git checkout")
    assert lineage.git_info(str(repo))["aepipe.git_commit"] == head.stdout.strip() != COMMIT
