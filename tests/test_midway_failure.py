"""A stage that fails midway, after some outputs are in place: MLflow refuses pretrain's final
metrics (a real server behind tests/faultproxy.py). Every output is either the previous one or a
complete new one, never half-written; the message names which; the checkpoint survives, so the
re-run only finishes the job."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faultproxy import FaultProxy, Rule

pytestmark = pytest.mark.slow


def aepipe(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("aepipe")), *args],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def digest(root: Path) -> dict[str, str]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def proxy(mlflow_server: Any) -> Any:
    p = FaultProxy(mlflow_server.url).start()
    yield p
    p.stop()


def test_pretrain_failing_after_its_model_is_written_reports_it_and_resumes(
    proxy: Any, tmp_path: Path
) -> None:
    from aepipe.models.io import load_autoencoder

    work = tmp_path / "work"
    work.mkdir()
    params = {
        "pretrain": {"epochs": 1},
        "model": {"name": "conv", "width": 4},
        "mlflow": {"experiment": "midway"},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        "MLFLOW_TRACKING_URI": proxy.url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "AEPIPE_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "AEPIPE_PROGRESS": "0",
    }
    for stage in ("prepare", "pretrain"):
        ok = aepipe(work, env, stage)
        assert ok.returncode == 0, ok.stderr[-3000:]
    model, metrics, csv = (
        work / "models/autoencoder",
        work / "metrics/pretrain.json",
        work / "plots/pretrain_loss.csv",
    )
    before = {p: digest(p) for p in (model, metrics, csv)}

    params["pretrain"]["epochs"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    # MLflow refuses the final metrics: after the model and the loss curve are renamed into place,
    # before metrics/pretrain.json is written
    proxy.rules.append(Rule("POST", "/runs/log-batch", "503", body="final_val_loss", times=0))
    failed = aepipe(work, env, "pretrain")
    assert failed.returncode != 0
    message = failed.stderr
    assert "Traceback" not in message, message[-3000:]
    assert "MLflow failed while logging metrics to run" in message and "log-batch" in message
    assert (
        "written before the failure: models/autoencoder, plots/pretrain_loss.csv, plots/pretrain_loss.png"
        in message
    )
    assert "left as they were: metrics/pretrain.json" in message
    # the new outputs are whole, the old metrics untouched, no temp file left beside them
    assert digest(model) != before[model] and digest(csv) != before[csv]
    assert len(csv.read_text().splitlines()) == 3  # header + 2 epochs
    load_autoencoder(model)
    assert digest(metrics) == before[metrics]
    assert not [p for p in work.rglob("*") if ".tmp" in p.name], list(work.rglob("*.tmp*"))
    assert any((tmp_path / "ckpt").rglob("*.pt")), "the checkpoint of the finished epochs is gone"

    proxy.reset()
    rerun = aepipe(work, env, "pretrain", "--json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout)["resumed_from_epoch"] == 2  # nothing trained twice
    assert json.loads(metrics.read_text())["epochs"] == 2
    load_autoencoder(model)
    assert not any((tmp_path / "ckpt").rglob("*.pt")), "the checkpoint outlived the finished stage"
