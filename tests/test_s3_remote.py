"""Remote storage through an S3-compatible endpoint on 127.0.0.1 (moto server mode): the DVC remote
round-trips the pipeline's outputs byte for byte, and MLflow stores a registered model's artifacts
there and loads it back. Credentials come from the environment only."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aepipe.data.prepared import load_prepared
from tests.servers import MlflowServer, S3Server
from tests.test_dvc_pipeline import dvc, set_params

pytestmark = pytest.mark.slow
OUTPUTS = (
    "data/prepared",
    "models/autoencoder",
    "features",
    "models/classifier",
    "plots/confusion.png",
    "reports/registration.json",
)


def digest(repo: Path) -> dict[str, str]:
    out = {}
    for rel in OUTPUTS:
        p = repo / rel
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    server = S3Server().start()
    for k, v in S3Server.CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    for bucket in ("aepipe-dvc", "aepipe-mlflow"):
        server.client().create_bucket(Bucket=bucket)
    yield server
    server.stop()


def test_dvc_remote_and_mlflow_artifacts_round_trip_through_s3(
    repo_copy: Path, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    server = MlflowServer(
        tmp_path / "mlflow",
        artifacts="s3://aepipe-mlflow/artifacts",
        env={"MLFLOW_S3_ENDPOINT_URL": s3.url, **S3Server.CREDENTIALS},
    ).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        mlflow.set_tracking_uri(server.url)
        set_params(
            repo_copy,
            pretrain={"epochs": 2},
            model={"width": 8},
            mlflow={"experiment": "s3", "model_name": "s3-digits"},
        )
        dvc(repo_copy, "remote", "add", "-d", "store", "s3://aepipe-dvc/cache")
        dvc(repo_copy, "remote", "modify", "store", "endpointurl", s3.url)
        assert "testing" not in (repo_copy / ".dvc/config").read_text()  # no credentials in the repo
        dvc(repo_copy, "repro")
        before = digest(repo_copy)
        assert len(before) > 10

        # MLflow: the artifacts went to S3 through the server, and the model loads back from there
        n_mlflow, size_mlflow = s3.usage("aepipe-mlflow")
        assert n_mlflow > 0
        model = mlflow.pyfunc.load_model("models:/s3-digits@challenger")
        ds = load_prepared(repo_copy / "data/prepared")
        x, y = ds.split("test")
        acc = float((model.predict(np.ascontiguousarray(x))["class_index"].to_numpy() == y).mean())
        assert acc == pytest.approx(
            json.loads((repo_copy / "metrics/eval.json").read_text())["test_accuracy"], abs=1e-12
        )
        run_id = MlflowClient().get_model_version_by_alias("s3-digits", "challenger").run_id
        assert MlflowClient().get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")

        # DVC: push, wipe cache and workspace outputs, pull -> byte-identical files
        dvc(repo_copy, "push")
        n_dvc, size_dvc = s3.usage("aepipe-dvc")
        assert n_dvc > 0
        shutil.rmtree(repo_copy / ".dvc/cache")
        for rel in OUTPUTS:
            p = repo_copy / rel
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        dvc(repo_copy, "pull")
        assert digest(repo_copy) == before
        print(
            f"S3 round trip: DVC {n_dvc} objects / {size_dvc} bytes; MLflow {n_mlflow} objects / "
            f"{size_mlflow} bytes"
        )
        (tmp_path / "sizes.json").write_text(
            json.dumps({"dvc": [n_dvc, size_dvc], "mlflow": [n_mlflow, size_mlflow]})
        )
    finally:
        mlflow.set_tracking_uri(None)
        server.stop()
