"""`dvc repro` end to end in a copy of the repo, tracked by a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from aepipe.data.prepared import load_prepared

pytestmark = pytest.mark.slow
STAGES = ["prepare", "pretrain", "extract", "train", "evaluate", "register"]


def dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), *args], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def aepipe(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("aepipe")), *args], cwd=repo, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"aepipe {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def set_params(repo: Path, **sections: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_end_to_end_with_mlflow_server(repo_copy: Path, tracking_env: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    set_params(repo_copy, pretrain={"epochs": 4}, mlflow={"experiment": "dvc-e2e", "model_name": "dvc-e2e"})
    subprocess.run(["git", "commit", "-qam", "fast params"], cwd=repo_copy, check=True)

    first = dvc(repo_copy, "repro")
    assert ran(first) == STAGES

    metrics = json.loads((repo_copy / "metrics/eval.json").read_text())
    assert metrics["test_accuracy"] > 0.9, metrics  # chance: 0.1
    registration = json.loads((repo_copy / "reports/registration.json").read_text())

    # what `make run` prints (dvc repro, then `aepipe summary`) reads well: short, no library
    # warning or colour code, one line per stage, and a summary that tells the truth
    summary = aepipe(repo_copy, "summary")
    printed = first + summary
    lines = printed.splitlines()
    assert len(lines) < 60, printed
    assert not [x for x in lines if re.search("warning|deprecat", x, re.IGNORECASE)], printed
    assert "\x1b[" not in printed, printed
    assert "{" not in first, first  # no result dict dumped
    for stage in STAGES:
        assert f"aepipe {stage}: " in first, first
    assert summary.splitlines()[0] == (
        f"Result:  test accuracy {metrics['test_accuracy']:.4f}, macro-F1 {metrics['test_macro_f1']:.4f} "
        f"on {metrics['n_test']} test images (metrics/eval.json)"
    )
    assert f"dvc-e2e v{registration['version']}, alias challenger (this run's model)" in summary
    then = summary.splitlines()[-3:]  # the next three commands, last: what the eye lands on
    assert "make ui" in then[0] and "aepipe promote" in then[1] and "dvc exp run -S" in then[2], summary

    # dvc reads the metrics and renders the plots
    shown = json.loads(dvc(repo_copy, "metrics", "show", "--json"))
    flat = json.dumps(shown)
    assert "test_accuracy" in flat and "final_val_loss" in flat
    dvc(repo_copy, "plots", "show", "-o", "dvc_plots")
    html = (repo_copy / "dvc_plots/index.html").read_text()
    assert "confusion" in html.lower() and "reconstructions.png" in html

    # the registry: alias challenger -> v1, which reproduces evaluate's test accuracy on raw images
    client = MlflowClient()
    assert registration["created"] and registration["this_run_selected"]
    version = client.get_model_version_by_alias("dvc-e2e", "challenger")
    assert str(version.version) == registration["version"] == "1"
    ds = load_prepared(repo_copy / "data/prepared")
    assert version.tags["aepipe.data_hash"] == ds.meta["data_hash"]
    model = mlflow.pyfunc.load_model("models:/dvc-e2e@challenger")
    x_test, y_test = ds.split("test")
    pred = model.predict(np.ascontiguousarray(x_test))
    assert float((pred["class_index"].to_numpy() == y_test).mean()) == pytest.approx(
        metrics["test_accuracy"], abs=1e-12
    )
    assert pred["class"].iloc[0] == ds.classes[int(pred["class_index"].iloc[0])]

    # nothing changed: nothing runs
    assert ran(dvc(repo_copy, "repro")) == []

    # a classifier param re-runs only what depends on it; a new version only if it wins on validation
    set_params(repo_copy, classifier={"linear": {"c_grid": [10.0], "max_iter": 2000}})
    assert ran(dvc(repo_copy, "repro")) == ["train", "evaluate", "register"]
    second = json.loads((repo_copy / "reports/registration.json").read_text())
    new_val = json.loads((repo_copy / "metrics/eval.json").read_text())["val_accuracy"]
    # a tie on val_accuracy goes to the lower validation loss (README "MLflow")
    tie_won = new_val == metrics["val_accuracy"] and second["val_loss"] < registration["val_loss"]
    assert second["this_run_selected"] == (new_val > metrics["val_accuracy"] or tie_won), second["selection"]
    assert second["created"] == second["this_run_selected"]
    assert str(client.get_model_version_by_alias("dvc-e2e", "challenger").version) == second["version"]

    # lineage: one parent run per execution, a nested run per stage, tagged with commit + data hash
    exp = client.get_experiment_by_name("dvc-e2e")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("aepipe.kind") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("aepipe.kind") == "stage"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo_copy, capture_output=True, text=True
    ).stdout.strip()
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] in {p.info.run_id for p in parents}
        assert child.data.tags["aepipe.git_commit"] == commit
        assert child.info.status == "FINISHED"
    first_parent = next(
        p
        for p in parents
        if len([c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id]) == 6
    )
    assert first_parent.data.params["pretrain.epochs"] == "4"
    # the experiment table (one row per execution) sorts by the key metrics of evaluate
    for key in ("test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1"):
        assert first_parent.data.metrics[key] == metrics[key], key
    pretrain_run = next(c for c in children if c.data.tags["aepipe.stage"] == "pretrain")
    assert len(client.get_metric_history(pretrain_run.info.run_id, "val_loss")) == 4
    assert pretrain_run.data.tags["aepipe.data_hash"] == ds.meta["data_hash"]
    evaluate_run = next(c for c in children if c.data.tags["aepipe.stage"] == "evaluate")
    logged = {a.path for a in client.list_artifacts(evaluate_run.info.run_id, "plots")}
    assert logged == {
        f"plots/{n}"
        for n in ("confusion.png", "reconstructions.png", "latent_projection.png", "misclassified.png")
    }
