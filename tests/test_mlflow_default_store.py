"""Without MLFLOW_TRACKING_URI the CLI tracks into sqlite:///mlflow.db in the working directory,
and `make ui` serves that store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from aepipe.cli import main
from aepipe.data.prepared import load_prepared
from tests.servers import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every stage run by the CLI in a fresh project folder, with no MLFLOW_TRACKING_URI."""
    tmp_path = tmp_path_factory.mktemp("local-project")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(tmp_path)
        Path("params.yaml").write_text(
            "pretrain:\n  epochs: 2\nmodel:\n  width: 8\nmlflow:\n  model_name: local-digits\n"
        )
        for stage in ("prepare", "pretrain", "extract", "train", "evaluate", "register"):
            assert main([stage]) == 0, stage
    yield tmp_path


def test_cli_stages_track_into_local_sqlite(local_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    tmp_path = local_project
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
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


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of sockets LISTENing on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.add(addr)
    return found


def test_make_ui_serves_the_store_the_stages_wrote_on_localhost_only(local_project: Path) -> None:
    """`make ui` (the README's way to review a local run) run in the project folder: the MLflow
    server answers on 127.0.0.1 only and shows the registered version, its challenger alias,
    the register run's metrics, and its confusion.png through the UI's artifact endpoint."""
    port = free_port()
    log = local_project / "make-ui.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [
        "make",
        "--no-print-directory",
        "-C",
        str(REPO),
        "ui",
        f"UI_DIR={local_project}",
        f"UI_PORT={port}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"make ui exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"make ui did not answer:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(url + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else

        api = url + "/api/2.0/mlflow"
        alias = requests.get(
            api + "/registered-models/alias",
            params={"name": "local-digits", "alias": "challenger"},
            timeout=10,
        )
        assert alias.ok, alias.text
        version = alias.json()["model_version"]
        assert version["version"] == "1" and "test accuracy" in version["description"]
        run = requests.get(api + "/runs/get", params={"run_id": version["run_id"]}, timeout=10).json()["run"]
        metrics = {m["key"] for m in run["data"].get("metrics", [])}
        assert {"test_accuracy", "val_accuracy"} <= metrics, metrics
        listed = requests.get(
            api + "/artifacts/list", params={"run_id": version["run_id"]}, timeout=10
        ).json()
        assert "confusion.png" in {f["path"] for f in listed.get("files", [])}
        png = requests.get(
            url + "/get-artifact", params={"path": "confusion.png", "run_uuid": version["run_id"]}, timeout=10
        )
        assert png.ok and png.content.startswith(b"\x89PNG"), png.status_code
        assert requests.get(url + "/", timeout=10).ok  # the UI's own page
    finally:
        if proc.poll() is None:
            os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            proc.wait()
