"""One set of params run three ways: `dvc repro`, `aepipe pipeline local` (one subprocess per task)
and `aepipe pipeline local --runner docker` (each task in the image); and the compiled pipeline
pinned to the image. The three-way tests live in this one file so that they run on one xdist
worker (``--dist loadfile``) and share one `dvc repro` and one subprocess run (``pipeline_runs``).

In the image every task runs in its own container (kfp.local's DockerRunner) as uid 1000 on a
read-only root filesystem, artifacts passed between containers through the bind-mounted pipeline
root, MLflow reached over the host network at the session's real `mlflow server` with the
tracking URI passed as environment (as the cluster's secret passes it). Same params, same torch
threads and BLAS kernels: the same test accuracy and the same registered pair as the two other
ways, and the `challenger` version loads and predicts. The Docker tests skip without Docker; CI
requires it (``tests/containers.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from aepipe.cli import main
from aepipe.data.prepared import load_prepared
from aepipe.pipeline_cli import pin_image, run_local
from tests import containers, pipeline_runs

REPO = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "pretrain", "extract", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def engine() -> Any:
    return containers.engine_or_skip()


@pytest.mark.slow
def test_local_run_registers_the_same_pair_as_dvc_repro(
    tmp_path_factory: pytest.TempPathFactory, tracking_env: str
) -> None:
    """kfp.local (one subprocess per task) vs `dvc repro` in a copy of the repo: same params, same pair."""
    from mlflow import MlflowClient

    ref = pipeline_runs.reference(tmp_path_factory.getbasetemp() / "three-ways", tracking_env)
    dvc, result = ref["dvc"], ref["subprocess"]
    assert result["tracking_uri"] == tracking_env and result["runner"] == "subprocess"
    assert result["metrics"]["test_accuracy"] == dvc["metrics"]["test_accuracy"] > 0.8  # chance: 0.1
    assert result["metrics"] == dvc["metrics"]
    record = result["registration"]
    # same params and seed give byte-identical weights, so the KFP candidate is dvc repro's pair:
    # the registry keeps version 1 instead of registering the same model twice
    assert dvc["registration"]["version"] == record["version"] == "1"
    assert record["created"] is False and record["candidates"] >= 2
    assert pipeline_runs.pair_hash(record["this_run_id"]) == pipeline_runs.pair_hash(
        dvc["registration"]["this_run_id"]
    )
    client = MlflowClient()
    version = client.get_model_version_by_alias(pipeline_runs.MODEL, "challenger")
    assert str(version.version) == "1"
    assert version.tags["aepipe.test_accuracy"] == f"{dvc['metrics']['test_accuracy']:.6f}"
    exp = client.get_experiment_by_name(pipeline_runs.EXPERIMENT)
    kfp_parent = client.get_run(client.get_run(record["this_run_id"]).data.tags["mlflow.parentRunId"])
    assert kfp_parent.info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{kfp_parent.info.run_id}'"
    )
    assert sorted(r.data.tags["aepipe.stage"] for r in children) == sorted(STAGES)
    print(
        f"\nkfp.local pipeline (subprocesses): {result['seconds']} s; dvc repro: {dvc['seconds']} s; "
        f"test accuracy {dvc['metrics']['test_accuracy']:.4f}"
    )


@pytest.mark.slow
def test_the_pipeline_in_the_image_registers_the_pair_dvc_repro_and_the_subprocess_runner_registered(
    engine: Any, tmp_path_factory: pytest.TempPathFactory, tracking_env: str
) -> None:
    import mlflow
    from mlflow import MlflowClient

    ref = pipeline_runs.reference(tmp_path_factory.getbasetemp() / "three-ways", tracking_env)
    out = tmp_path_factory.mktemp("kfp_docker")
    result = pipeline_runs.in_threads(run_local, ref["params"], containers.image(), REPO, out, "docker")

    assert result["runner"] == "docker" and result["gpu"] is False
    assert result["image_id"] == engine.images.get(containers.image()).id  # pinned to the image tested
    assert result["image"].startswith("aepipe:local-")
    # the tasks wrote their outputs as the image's user, not as this (root or other) process
    assert Path(result["metrics_path"]).stat().st_uid == containers.UID

    dvc, sub = ref["dvc"], ref["subprocess"]
    assert (
        result["metrics"]["test_accuracy"]
        == dvc["metrics"]["test_accuracy"]
        == sub["metrics"]["test_accuracy"]
    )
    assert result["metrics"] == dvc["metrics"]  # every number of evaluate, per class included
    record = result["registration"]
    hashes = {
        way: pipeline_runs.pair_hash(r["this_run_id"])
        for way, r in (
            ("docker", record),
            ("dvc repro", dvc["registration"]),
            ("subprocess", sub["registration"]),
        )
    }
    assert len(set(hashes.values())) == 1, hashes  # byte-identical weights: one pair, registered once
    assert record["version"] == dvc["registration"]["version"] == "1" and record["created"] is False

    client = MlflowClient()
    parent = client.get_run(client.get_run(record["this_run_id"]).data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    # lineage from inside the image (no .git there): the commit `make image` baked in
    commit, dirty = containers.baked_commit(engine)
    assert parent.data.tags["aepipe.git_commit"] == commit
    assert parent.info.run_name.endswith(f"@{commit[:7]}" + ("+dirty" if dirty == "true" else ""))
    exp = client.get_experiment_by_name(pipeline_runs.EXPERIMENT)
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted((r.data.tags["aepipe.stage"], r.info.status) for r in children) == sorted(
        (s, "FINISHED") for s in STAGES
    )

    # the challenger loads here and predicts the test split as evaluate scored it in its container
    model = mlflow.pyfunc.load_model(f"models:/{pipeline_runs.MODEL}@challenger")
    (data_dir,) = Path(result["outputs"]).glob("**/prepare/data")
    x_test, y_test = load_prepared(data_dir).split("test")
    predicted = model.predict(np.ascontiguousarray(x_test))["class_index"].to_numpy()
    assert np.mean(predicted == y_test) == pytest.approx(result["metrics"]["test_accuracy"])
    print(
        f"\npipeline local --runner docker: {result['seconds']} s; --runner subprocess: {sub['seconds']} s; "
        f"dvc repro: {dvc['seconds']} s; test accuracy {dvc['metrics']['test_accuracy']:.4f}"
    )


def test_the_docker_runner_refuses_an_mlflow_store_the_containers_cannot_reach(
    engine: Any, tmp_path: Path, tracking_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from aepipe.config import apply_overrides
    from aepipe.errors import AepipeError

    params = apply_overrides(pipeline_runs.params(), ["mlflow.experiment=host-path-artifacts"])
    MlflowClient().create_experiment("host-path-artifacts", artifact_location=str(tmp_path / "artifacts"))
    with pytest.raises(AepipeError, match=r"keeps its artifacts at .*artifacts, a path on this host"):
        run_local(params, containers.image(), REPO, tmp_path / "out", "docker")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(
        AepipeError, match=r"--runner docker needs an MLflow tracking server the containers can reach"
    ):
        run_local(params, containers.image(), REPO, tmp_path / "out", "docker")
    assert not list((tmp_path / "out").iterdir())  # refused before any task ran


def test_compile_pins_the_image_by_digest(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    digest = "sha256:" + "ab" * 32
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "-o", str(out), "--image-digest", digest]) == 0
    assert json.loads(capsys.readouterr().out)["image_pinned"] == "--image-digest"
    images = {
        e["container"]["image"]
        for e in next(yaml.safe_load_all(out.read_text()))["deploymentSpec"]["executors"].values()
    }
    assert images == {f"{containers.image()}@{digest}"}

    # automatic: the engine holds the image, built here and never pushed: no registry digest yet
    assert main(["pipeline", "compile", "-o", str(out)]) == 0
    how = json.loads(capsys.readouterr().out)["image_pinned"]
    assert "was built here and never pushed" in how and "make image-push" in how

    assert main(["pipeline", "compile", "-o", str(out), "--image-digest", "sha256:abc"]) == 2
    assert "expected sha256: and 64 hex digits" in capsys.readouterr().err


class Image:
    """What ``docker image inspect`` says of a pushed image (an engine cannot push here: no registry)."""

    id = "sha256:" + "1" * 64
    attrs: ClassVar[dict[str, list[str]]] = {
        "RepoDigests": [
            "other.example/aepipe@sha256:" + "2" * 64,
            "reg.example/team/aepipe@sha256:" + "3" * 64,
        ]
    }


class Images:
    def get(self, name: str) -> Image:
        assert name == "reg.example/team/aepipe:0.1.0-cuda"
        return Image()


class Engine:
    images = Images()


def test_a_pushed_image_is_pinned_to_its_own_repositorys_digest() -> None:
    pinned, how = pin_image("reg.example/team/aepipe:0.1.0-cuda", engine=Engine())
    assert pinned == "reg.example/team/aepipe:0.1.0-cuda@sha256:" + "3" * 64
    assert how.startswith("registry digest of the local image")
    assert pin_image("reg.example/aepipe@sha256:" + "4" * 64) == (
        "reg.example/aepipe@sha256:" + "4" * 64,
        "digest given in the image reference",
    )
