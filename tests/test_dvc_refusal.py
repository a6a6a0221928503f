"""Real `dvc repro`: a refused stage leaves every output byte for byte, its message tells the truth
about them, and the code deps of dvc.yaml re-run what an edit can change and nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_dvc_pipeline import STAGES, ran

pytestmark = pytest.mark.slow
OUTPUTS = ("data/prepared", "models", "features", "metrics", "plots", "reports", "dvc.lock")


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(env or {}),
    }
    if "MLFLOW_TRACKING_URI" not in (env or {}):
        full.pop("MLFLOW_TRACKING_URI", None)  # the repository's own sqlite store
    return subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), *args],
        cwd=repo,
        env=full,
        capture_output=True,
        text=True,
    )


def outputs(repo: Path) -> dict[str, str]:
    files = {}
    for top in OUTPUTS:
        root = repo / top
        for p in [root] if root.is_file() else sorted(root.rglob("*")):
            if p.is_file():
                files[str(p.relative_to(repo))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def status(repo: Path) -> set[str]:
    proc = dvc(repo, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout or "{}"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_stages_keep_outputs_and_deps_rerun_what_changed(repo_copy: Path) -> None:
    params_path = repo_copy / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["model"].update(name="conv", width=4, depth=1)
    params["pretrain"]["epochs"] = 1
    params["mlflow"].update(experiment="refusal", model_name="refusal")
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    good_params = params_path.read_text()
    subprocess.run(["git", "commit", "-qam", "tiny params"], cwd=repo_copy, check=True)

    first = dvc(repo_copy, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert ran(first.stdout) == STAGES
    before = outputs(repo_copy)
    assert len(before) > 20 and status(repo_copy) == set()

    # 1. a bad value in params.yaml: pretrain refuses; DVC no longer deletes its outputs first
    params_path.write_text(good_params.replace("lr: 0.001", "lr: -1.0"))
    proc = dvc(repo_copy, "repro")
    assert proc.returncode != 0
    assert "pretrain.lr: Input should be greater than 0" in proc.stdout + proc.stderr
    assert outputs(repo_copy) == before
    assert "pretrain" in status(repo_copy)  # DVC knows it has not run with these params

    # 2. a bad data source: prepare refuses and says what happened to its output
    params_path.write_text(good_params.replace("source: digits", "source: npz:data/raw/missing.npz"))
    proc = dvc(repo_copy, "repro")
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "missing.npz: data.source file not found" in text
    assert "Outputs left as they were: data/prepared." in text
    assert outputs(repo_copy) == before

    # 3. MLflow down while a stage is forced: refused before anything is written
    params_path.write_text(good_params)
    assert status(repo_copy) == set()  # the failed runs left nothing for DVC to re-run
    down = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    proc = dvc(repo_copy, "repro", "-f", "-s", "extract", env=down)
    text = proc.stdout + proc.stderr
    assert (
        proc.returncode != 0 and "is unreachable" in text and "Outputs left as they were: features." in text
    )
    assert outputs(repo_copy) == before

    # without persist: true, DVC deletes the output first and the message says so
    dvc_yaml = repo_copy / "dvc.yaml"
    spec = yaml.safe_load(dvc_yaml.read_text())
    spec["stages"]["extract"]["outs"] = ["features"]
    dvc_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = dvc(repo_copy, "repro", "-f", "-s", "extract", env=down)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not (repo_copy / "features").exists()
    assert "not there when the stage started: features" in text and "dvc checkout extract" in text
    subprocess.run(["git", "checkout", "-q", "--", "dvc.yaml"], cwd=repo_copy, check=True)
    assert dvc(repo_copy, "checkout", "extract").returncode == 0
    assert outputs(repo_copy) == before

    # code deps: an edit re-runs the stages that may run that code, and only those
    def touched(rel: str) -> set[str]:
        path = repo_copy / rel
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            return status(repo_copy)
        finally:
            path.write_text(original)

    assert touched("src/aepipe/tracking/review.py") == {"register"}
    assert touched("src/aepipe/plots.py") == {"pretrain", "evaluate", "register"}
    # params validate without the models (their options live in aepipe.options): prepare never runs them
    assert touched("src/aepipe/models/backbone.py") == set(STAGES) - {"prepare"}
    assert touched("src/aepipe/options.py") == set(STAGES)  # every stage validates the variant options
    assert touched("src/aepipe/config.py") == set(STAGES)
    assert touched("src/aepipe/predict.py") == {"register"}  # shipped in the registered model only
    assert status(repo_copy) == set()
