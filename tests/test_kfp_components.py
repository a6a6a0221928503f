"""Each KFP component through ``component.python_func``: real stages on digits, real artifacts, a
real MLflow store.

The components are chained by hand (what kfp.local and the cluster do between tasks), so every
component reads the artifact directories the previous one wrote. MLflow is a sqlite store in a
temp dir: no server is needed to check that all six stage runs nest under the KFP run's parent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from aepipe.config import parse_params
from aepipe.data.prepared import load_prepared
from aepipe.errors import ConfigError
from aepipe.kfp_support import params_to_json
from aepipe.models.io import load_autoencoder, load_head
from aepipe.tracking.lineage import KEY_ENV, KEY_TAG
from components import COMPONENTS, evaluate, extract, prepare, pretrain, register, train

FAST = {
    "pretrain": {"epochs": 2},
    "model": {"width": 8},
    "classifier": {"linear": {"c_grid": [1.0]}},
    "mlflow": {"experiment": "kfp-components", "model_name": "kfp-components"},
}
KEY = "kfp-run-unit-0001"


def art(cls: type, root: Path, name: str) -> Any:
    return cls(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import mlflow

    root = tmp_path_factory.mktemp("components")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params_json = params_to_json(parse_params(FAST))
    a = {
        "data": art(Dataset, root, "data"),
        "summary": art(Metrics, root, "summary"),
        "autoencoder": art(Model, root, "autoencoder"),
        "pretrain_metrics": art(Metrics, root, "pretrain_metrics"),
        "pretrain_report": art(HTML, root, "pretrain_report"),
        "features": art(Dataset, root, "features"),
        "classifier": art(Model, root, "classifier"),
        "train_metrics": art(Metrics, root, "train_metrics"),
        "metrics": art(Metrics, root, "metrics"),
        "confusion": art(ClassificationMetrics, root, "confusion"),
        "report": art(HTML, root, "report"),
        "registration": art(Artifact, root, "registration"),
        "pretrain_plots": art(Artifact, root, "pretrain_plots"),
        "train_plots": art(Artifact, root, "train_plots"),
        "evaluate_plots": art(Artifact, root, "evaluate_plots"),
    }
    common = {"params_json": params_json, "execution_key": KEY}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv(KEY_ENV, raising=False)
        mp.chdir(root)  # mlflow's sqlite store puts artifacts in ./mlruns
        try:
            prepare.python_func(**common, data=a["data"], summary=a["summary"])
            pretrain.python_func(
                **common,
                data=a["data"],
                autoencoder=a["autoencoder"],
                metrics=a["pretrain_metrics"],
                report=a["pretrain_report"],
                plots=a["pretrain_plots"],
            )
            extract.python_func(
                **common, data=a["data"], autoencoder=a["autoencoder"], features=a["features"]
            )
            train.python_func(
                **common,
                data=a["data"],
                features=a["features"],
                autoencoder=a["autoencoder"],
                classifier=a["classifier"],
                metrics=a["train_metrics"],
                plots=a["train_plots"],
            )
            evaluate.python_func(
                **common,
                data=a["data"],
                autoencoder=a["autoencoder"],
                classifier=a["classifier"],
                metrics=a["metrics"],
                confusion=a["confusion"],
                report=a["report"],
                plots=a["evaluate_plots"],
            )
            register.python_func(
                **common,
                data=a["data"],
                autoencoder=a["autoencoder"],
                classifier=a["classifier"],
                pretrain_metrics=a["pretrain_metrics"],
                train_metrics=a["train_metrics"],
                eval_metrics=a["metrics"],
                pretrain_plots=a["pretrain_plots"],
                evaluate_plots=a["evaluate_plots"],
                registration=a["registration"],
            )
            assert KEY_ENV not in os.environ  # the key was the component's, not the caller's
            yield {"root": root, "uri": uri, **a}
        finally:
            mlflow.set_tracking_uri(None)


def test_every_stage_has_one_component_with_typed_artifacts() -> None:
    assert list(COMPONENTS) == ["prepare", "pretrain", "extract", "train", "evaluate", "register"]
    types = {
        name: {
            k: v.type
            for k, v in {**(c.component_spec.inputs or {}), **(c.component_spec.outputs or {})}.items()
        }
        for name, c in COMPONENTS.items()
    }
    assert types["prepare"]["data"] == "system.Dataset@0.0.1"
    assert types["pretrain"]["autoencoder"] == types["train"]["classifier"] == "system.Model@0.0.1"
    assert types["evaluate"]["confusion"] == "system.ClassificationMetrics@0.0.1"
    assert types["evaluate"]["report"] == types["pretrain"]["report"] == "system.HTML@0.0.1"
    assert types["register"]["eval_metrics"] == "system.Metrics@0.0.1"
    for component in COMPONENTS.values():
        assert component.component_spec.inputs["params_json"].type == "String"
        command = " ".join(component.component_spec.implementation.container.command)
        assert "pip install" not in command  # install_kfp_package=False: the image has kfp


def test_prepare_writes_the_prepared_dataset(chain: dict[str, Any]) -> None:
    ds = load_prepared(chain["data"].path)
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.uint8
    assert chain["summary"].metadata == {"n_train": 1293.0, "n_val": 144.0, "n_test": 360.0, "classes": 10.0}
    assert chain["data"].metadata["data_hash"] == ds.meta["data_hash"]


def test_pretrain_writes_the_model_dir_metrics_and_report(chain: dict[str, Any]) -> None:
    model = load_autoencoder(chain["autoencoder"].path)
    assert model.spec.width == 8
    written = json.loads(Path(chain["pretrain_metrics"].path).read_text())
    assert written["epochs"] == 2 == chain["pretrain_metrics"].metadata["epochs"]
    assert chain["pretrain_metrics"].metadata["final_val_loss"] == pytest.approx(written["final_val_loss"])
    page = Path(chain["pretrain_report"].path).read_text()
    assert page.count("data:image/png;base64,iVBORw0KGgo") == 1  # the loss curve, inlined


def test_extract_and_train_artifacts(chain: dict[str, Any]) -> None:
    lengths = [len(np.load(Path(chain["features"].path) / f"{s}.npy")) for s in ("train", "val", "test")]
    assert lengths == [1293, 144, 360]
    assert chain["features"].metadata["shapes"]["train"][0] == 1293
    _, spec = load_head(chain["classifier"].path)
    assert spec["head"] == "linear" and spec["C"] == 1.0
    assert 0.5 < chain["train_metrics"].metadata["val_accuracy"] <= 1.0


def test_evaluate_logs_metrics_confusion_and_a_self_contained_report(chain: dict[str, Any]) -> None:
    written = json.loads(Path(chain["metrics"].path).read_text())
    logged = chain["metrics"].metadata
    assert logged["test_accuracy"] == written["test_accuracy"] > 0.5  # chance: 0.1
    matrix = chain["confusion"].metadata["confusionMatrix"]
    cats = [c["displayName"] for c in matrix["annotationSpecs"]]
    rows = [r["row"] for r in matrix["rows"]]
    assert cats == [str(i) for i in range(10)]
    assert sum(map(sum, rows)) == written["n_test"] == 360
    assert sum(rows[i][i] for i in range(10)) / 360 == pytest.approx(written["test_accuracy"])
    page = Path(chain["report"].path).read_text()
    assert (
        len(re.findall(r'src="data:image/png;base64,iVBORw0KGgo', page)) == 2
    )  # confusion + reconstructions
    assert "test_accuracy" in page


def test_register_records_the_version_and_nests_every_stage_under_the_kfp_run(chain: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    record = json.loads(Path(chain["registration"].path).read_text())
    assert chain["registration"].metadata["model_uri"] == record["model_uri"] == "models:/kfp-components/1"
    client = MlflowClient(chain["uri"])
    assert str(client.get_model_version_by_alias("kfp-components", "challenger").version) == "1"
    exp = client.get_experiment_by_name("kfp-components")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("aepipe.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags[KEY_TAG] == KEY and parents[0].info.status == "FINISHED"
    stages = sorted(
        r.data.tags["aepipe.stage"]
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    )
    assert stages == sorted(COMPONENTS)
    register_run = next(r for r in runs if r.data.tags.get("aepipe.stage") == "register")
    review = {a.path for a in client.list_artifacts(register_run.info.run_id, "review")}
    for name in (
        "model_card.md",
        "pretrain_loss.png",
        "confusion.png",
        "latent_projection.png",
        "misclassified.png",
        "train.json",
    ):
        assert f"review/{name}" in review, review


def test_bad_params_json_fails_with_the_key_and_before_writing(tmp_path: Path) -> None:
    data = art(Dataset, tmp_path, "data")
    with pytest.raises(
        ConfigError,
        match=r"params_json \(pipeline parameter\): invalid params: pretrain\.epochs: .*greater than or "
        r"equal to 0",
    ):
        prepare.python_func(
            params_json='{"pretrain": {"epochs": -1}}',
            execution_key=KEY,
            data=data,
            summary=art(Metrics, tmp_path, "s"),
        )
    with pytest.raises(ConfigError, match=r"params_json \(pipeline parameter\): not valid JSON"):
        prepare.python_func(
            params_json="pretrain.epochs=3", execution_key=KEY, data=data, summary=art(Metrics, tmp_path, "s")
        )
    assert not Path(data.path).exists()


def finished(state: str, message: str | None = None) -> Any:
    from kfp import dsl

    return dsl.PipelineTaskFinalStatus(
        state, "run-resource", "exit-handler-1", 1 if message else None, message
    )


def test_the_exit_task_closes_the_runs_of_a_failed_execution_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finalize (the pipeline's exit task): parent FAILED with the error, an orphaned stage run KILLED."""
    from mlflow import MlflowClient

    from aepipe.tracking import lineage
    from components import finalize

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = parse_params({"mlflow": {"experiment": "finalize"}})
    client = lineage.client()
    exp = lineage.experiment_id(client, "finalize")
    runs = {}
    for key in ("run-a", "run-b"):  # two KFP runs of the same params
        monkeypatch.setenv(KEY_ENV, key)
        runs[key] = lineage.parent_run(client, exp, params, {})
        child = client.create_run(exp, tags={"mlflow.parentRunId": runs[key], "aepipe.kind": "stage"})
        runs[f"{key}-stage"] = child.info.run_id  # a pod killed before it could report: RUNNING
    monkeypatch.delenv(KEY_ENV)
    done = client.create_run(exp, tags={"mlflow.parentRunId": runs["run-a"], "aepipe.kind": "stage"})
    client.set_terminated(done.info.run_id, "FINISHED")

    finalize.python_func(
        params_json=params_to_json(params), execution_key="run-b", status=finished("SUCCEEDED")
    )
    finalize.python_func(
        params_json=params_to_json(params),
        execution_key="run-a",
        status=finished("FAILED", "Task exit-handler-1 failed."),
    )
    status = {k: MlflowClient().get_run(v).info.status for k, v in runs.items()}
    assert status == {
        "run-a": "FAILED",
        "run-a-stage": "KILLED",
        "run-b": "RUNNING",
        "run-b-stage": "RUNNING",
    }
    assert MlflowClient().get_run(done.info.run_id).info.status == "FINISHED"
    assert (
        MlflowClient().get_run(runs["run-a"]).data.tags["aepipe.pipeline_error"]
        == "Task exit-handler-1 failed."
    )


def test_a_task_that_asked_for_a_gpu_and_sees_none_fails_before_the_stage_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from aepipe.kfp_support import GPU_ENV, check_gpu_runtime

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here: the error cannot happen")
    data = art(Dataset, tmp_path, "data")
    monkeypatch.setenv(GPU_ENV, "nvidia.com/gpu")
    with pytest.raises(ConfigError, match=r"requested a GPU \(nvidia.com/gpu\) .* no CUDA device is visible"):
        prepare.python_func(
            params_json="{}", execution_key=KEY, data=data, summary=art(Metrics, tmp_path, "s")
        )
    assert not Path(data.path).exists()
    check_gpu_runtime(parse_params({"device": "cpu"}))  # a task told to use the CPU is left alone
    # a CPU-only torch build (torch.version.cuda None; the image's cpu variant) is named as the cause
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match=r"CPU-only build without the CUDA runtime; run the CUDA image"):
        check_gpu_runtime(parse_params({}))
    monkeypatch.delenv(GPU_ENV)
    check_gpu_runtime(parse_params({}))  # no GPU asked for: nothing to check
