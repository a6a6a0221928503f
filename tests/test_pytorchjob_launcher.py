"""The in-pipeline PyTorchJob launcher's decisions, through the real ``kubernetes`` client.

No cluster here: ``tests/fake_apiserver.py`` answers the three calls the launcher makes (create,
get, delete of ``pytorchjobs``) like the API server, so every ``ApiException``, ``V1DeleteOptions``
and URL is the client's own. What is checked: a fresh run creates the job; a retried task waits
for its job while it runs and deletes and recreates it once it has finished; a failure or a
timeout is an error naming the job; after a success the job and the staged folder are deleted.
Not checked (no cluster): the Training Operator, RBAC, the pods themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aepipe.config import parse_params
from aepipe.errors import ModelError
from aepipe.pytorchjob import build_pytorchjob, run_in_pipeline, run_name
from tests.fake_apiserver import FakeApiServer

KEY = "3f2a1b4c-9d8e-4f00-8000-000000000000"
NAME = f"aepipe-pretrain-{run_name(KEY)}"


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.stop()


def params(tmp_path: Path, **job: Any) -> Any:
    return parse_params(
        {"kubeflow": {"pytorchjob": {"in_pipeline": True, "workdir": str(tmp_path / "ws"), **job}}}
    )


def prepared(tmp_path: Path) -> Path:
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "meta.json").write_text("{}")
    return data


def rank0_writes_outputs(server: FakeApiServer, run_dir: Path) -> None:
    """What the job's rank 0 leaves on the volume when it succeeds."""

    def on_state(name: str, state: str) -> None:
        if state == "Succeeded":
            (run_dir / "models/autoencoder").mkdir(parents=True)
            (run_dir / "models/autoencoder/model.pt").write_bytes(b"weights")
            (run_dir / "metrics").mkdir()
            (run_dir / "metrics/pretrain.json").write_text(json.dumps({"epochs": 3, "final_val_loss": 0.1}))
            (run_dir / "plots").mkdir()
            (run_dir / "plots/pretrain_loss.csv").write_text("epoch,train_loss\n")

    server.on_state = on_state


def launch(server: FakeApiServer, tmp_path: Path, p: Any, clock: Any = None) -> dict[str, Any]:
    slept: list[float] = []
    out = tmp_path / "out"
    result = run_in_pipeline(
        p,
        "reg.example/aepipe:1-cuda",
        KEY,
        prepared(tmp_path),
        out / "autoencoder",
        out / "metrics.json",
        out / "plots",
        api=server.api(),
        namespace="ns",
        sleep=slept.append,
        **({"clock": clock} if clock else {}),
    )
    return result | {"slept": slept}


def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "ws" / "runs" / run_name(KEY)


def test_a_fresh_run_creates_waits_collects_and_cleans_up(apiserver: FakeApiServer, tmp_path: Path) -> None:
    apiserver.scripts[NAME] = ["Created", "Running", "Running", "Succeeded"]
    rank0_writes_outputs(apiserver, run_dir(tmp_path))
    result = launch(apiserver, tmp_path, params(tmp_path, poll_seconds=7))
    assert result["pytorchjob_action"] == "created" and result["epochs"] == 3
    assert [c for c in apiserver.calls if c[0] != "get"] == [("create", NAME), ("delete", NAME)]
    assert result["slept"] == [7, 7, 7]  # polled until the operator said Succeeded
    assert (tmp_path / "out/autoencoder/model.pt").read_bytes() == b"weights"
    assert not run_dir(tmp_path).exists()  # the staged data and the job's outputs are gone from the volume
    assert (tmp_path / "ws/runs").is_dir()


def test_cleanup_false_keeps_the_job_and_the_staged_folder(apiserver: FakeApiServer, tmp_path: Path) -> None:
    rank0_writes_outputs(apiserver, run_dir(tmp_path))
    launch(apiserver, tmp_path, params(tmp_path, cleanup=False))
    assert ("delete", NAME) not in apiserver.calls and NAME in apiserver.jobs
    assert (run_dir(tmp_path) / "params.yaml").is_file()


def test_a_retry_waits_for_its_job_while_it_runs(apiserver: FakeApiServer, tmp_path: Path) -> None:
    apiserver.put(NAME, "Running", ["Running", "Running", "Succeeded"])
    rank0_writes_outputs(apiserver, run_dir(tmp_path))
    result = launch(apiserver, tmp_path, params(tmp_path))
    assert result["pytorchjob_action"] == "waiting"
    assert [c for c in apiserver.calls if c[0] != "get"] == [("create", NAME), ("delete", NAME)]


@pytest.mark.parametrize("finished", ["Failed", "Succeeded"])
def test_a_retry_deletes_a_finished_job_and_creates_it_again(
    apiserver: FakeApiServer, tmp_path: Path, finished: str
) -> None:
    apiserver.put(NAME, finished)
    apiserver.linger = 2  # deletion is asynchronous: the old job answers twice more, being deleted
    rank0_writes_outputs(apiserver, run_dir(tmp_path))
    result = launch(apiserver, tmp_path, params(tmp_path))
    assert result["pytorchjob_action"] == "recreated"
    writes = [c for c in apiserver.calls if c[0] != "get"]
    assert writes == [("create", NAME), ("delete", NAME), ("create", NAME), ("delete", NAME)]
    # the second create came only once the old job was gone: two GETs saw it being deleted, the third a 404
    first_delete = apiserver.calls.index(("delete", NAME))
    second_create = max(i for i, c in enumerate(apiserver.calls) if c == ("create", NAME))
    assert apiserver.calls[first_delete + 1 : second_create] == [("get", NAME)] * 3
    assert result["epochs"] == 3


def test_a_failed_job_is_an_error_naming_it_and_the_volume_is_kept(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    apiserver.scripts[NAME] = ["Running", "Failed"]
    with pytest.raises(ModelError, match=rf"PyTorchJob ns/{NAME} failed: OOMKilled; see `kubectl -n ns logs"):
        launch(apiserver, tmp_path, params(tmp_path))
    assert ("delete", NAME) not in apiserver.calls  # kept for `kubectl logs`; the TTL removes it
    assert (run_dir(tmp_path) / "params.yaml").is_file()


def test_waiting_past_the_timeout_is_an_error(apiserver: FakeApiServer, tmp_path: Path) -> None:
    apiserver.scripts[NAME] = ["Running"]
    now = [0.0]

    def clock() -> float:
        now[0] += 600.0  # ten minutes per look at the clock
        return now[0]

    with pytest.raises(
        ModelError, match=r"did not finish within 0\.50 h; raise kubeflow.pytorchjob.timeout_hours"
    ):
        launch(apiserver, tmp_path, params(tmp_path, timeout_hours=0.5), clock=clock)


def test_a_refused_create_names_the_rbac_the_service_account_needs(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    apiserver.refuse_create = 403
    with pytest.raises(
        ModelError, match=r"creating PyTorchJob ns/.* refused \(403 Forbidden\).*create, get and delete"
    ):
        launch(apiserver, tmp_path, params(tmp_path))


def test_finished_jobs_expire_through_the_operators_ttl() -> None:
    job = build_pytorchjob(parse_params({}), "img")
    assert job["spec"]["runPolicy"] == {
        "backoffLimit": 3,
        "cleanPodPolicy": "None",
        "ttlSecondsAfterFinished": 86400,
    }
    keep = build_pytorchjob(
        parse_params({"kubeflow": {"pytorchjob": {"ttl_seconds_after_finished": None}}}), "img"
    )
    assert "ttlSecondsAfterFinished" not in keep["spec"]["runPolicy"]
