"""`register` is never replayed from DVC's run cache: after params return to earlier values, `dvc repro`
runs it for real against the CURRENT tracking server (here a second, empty one), instead of restoring a
registration.json that claims a version which does not exist there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.servers import MlflowServer
from tests.test_dvc_pipeline import dvc, ran, set_params

pytestmark = pytest.mark.slow


def test_params_back_to_earlier_values_rerun_register(
    repo_copy: Path, tracking_env: str, tmp_path: Path, monkeypatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    set_params(
        repo_copy,
        model={"name": "conv", "width": 8},
        pretrain={"epochs": 2},
        mlflow={"experiment": "replay", "model_name": "replay-digits"},
    )
    subprocess.run(["git", "commit", "-qam", "small params"], cwd=repo_copy, check=True)
    original = (repo_copy / "params.yaml").read_text()
    dvc(repo_copy, "repro")
    first = json.loads((repo_copy / "reports/registration.json").read_text())

    # a param only `register` reads changes (cheap: nothing else re-runs), then comes back
    params = yaml.safe_load(original)
    params["mlflow"]["promotion_margin"] = 0.01
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc(repo_copy, "repro")) == ["register"]

    # back to the first params, tracked by another (empty) server: the run cache knows this
    # stage's inputs, but register must run and register on the server it talks to now
    (repo_copy / "params.yaml").write_text(original)
    other = MlflowServer(tmp_path / "other").start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", other.url)
        out = dvc(repo_copy, "repro")
        assert "Stage 'register' is cached" not in out and "Running stage 'register'" in out, out[-3000:]
        record = json.loads((repo_copy / "reports/registration.json").read_text())
        client = MlflowClient(other.url)
        version = client.get_model_version("replay-digits", record["version"])  # exists on THIS server
        assert (
            version.tags["aepipe.pair_hash"]
            == client.get_run(record["selected_run_id"]).data.tags["aepipe.pair_hash"]
        )
        assert record["status"] == "created" and record["version"] == "1"
        assert client.get_registered_model("replay-digits").aliases == {"challenger": "1"}
        # the record is this run's, on this server: not the first run's, restored from DVC's cache
        assert record["selected_run_id"] != first["selected_run_id"]
        assert client.get_run(record["selected_run_id"]).info.status == "FINISHED"
    finally:
        other.stop()
        mlflow.set_tracking_uri(tracking_env)
