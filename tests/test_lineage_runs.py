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
