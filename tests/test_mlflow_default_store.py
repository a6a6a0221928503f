"""Without MLFLOW_TRACKING_URI the CLI tracks into sqlite:///mlflow.db in the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aepipe.cli import main
from aepipe.data.prepared import load_prepared

pytestmark = pytest.mark.slow


def test_cli_stages_track_into_local_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        "pretrain:\n  epochs: 2\nmodel:\n  width: 8\nmlflow:\n  model_name: local-digits\n"
    )
    for stage in ("prepare", "pretrain", "extract", "train", "evaluate", "register"):
        assert main([stage]) == 0, stage
    assert Path("mlflow.db").is_file()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri)
        version = client.get_model_version_by_alias("local-digits", "challenger")
        assert str(version.version) == "1"
        assert "test accuracy" in version.description
        monkeypatch.setenv(
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"
        )  # models-from-code: nothing unpickled
        model = mlflow.pyfunc.load_model("models:/local-digits@challenger")
        ds = load_prepared("data/prepared")
        x, y = ds.split("test")
        acc = float((model.predict(np.ascontiguousarray(x))["class_index"].to_numpy() == y).mean())
        assert acc == pytest.approx(
            json.loads(Path("metrics/eval.json").read_text())["test_accuracy"], abs=1e-12
        )
    finally:
        mlflow.set_tracking_uri(None)
