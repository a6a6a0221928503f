"""One set of params run three ways, to compare: `dvc repro`, `aepipe pipeline local` (subprocesses)
and `aepipe pipeline local --runner docker` (the image).

`dvc repro` and the subprocess pipeline are run once per test session (they are the reference the
kfp and the container tests both compare with), against the session's real `mlflow server`, so
all three register into one experiment and one registered model. Every run computes on one torch
thread (OMP_NUM_THREADS=1, like the suite's in-process code), so same params give the same bits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from aepipe.config import Params, apply_overrides, load_params
from aepipe.kfp_support import default_image
from aepipe.pipeline_cli import run_local

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = MODEL = "three-ways"
OVERRIDES = [
    "pretrain.epochs=2",
    "model.width=8",
    "classifier.linear.c_grid=[1.0]",
    f"mlflow.experiment={EXPERIMENT}",
    f"mlflow.model_name={MODEL}",
]
THREADS = {"OMP_NUM_THREADS": "1"}
_runs: dict[str, Any] = {}


def params() -> Params:
    return apply_overrides(load_params(REPO / "params.yaml"), OVERRIDES)


def dvc_repro(base: Path, p: Params) -> dict[str, Any]:
    from tests.conftest import copy_repo

    repo = copy_repo(base / "repo")
    (repo / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
    subprocess.run(["git", "commit", "-qam", "three-ways params"], cwd=repo, check=True)
    env = {**os.environ, **THREADS, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "repro"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"dvc repro failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "metrics": json.loads((repo / "metrics/eval.json").read_text()),
        "registration": json.loads((repo / "reports/registration.json").read_text()),
    }


def in_threads(fn: Any, *args: Any) -> Any:
    saved = {k: os.environ.get(k) for k in THREADS}
    os.environ.update(THREADS)
    try:
        return fn(*args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reference(base: Path, tracking_uri: str) -> dict[str, Any]:
    """{"params", "dvc", "subprocess"}: computed once per session and tracking server."""
    if _runs.get("uri") != tracking_uri:
        p = params()
        base.mkdir(parents=True, exist_ok=True)
        dvc = dvc_repro(base, p)
        local = in_threads(run_local, p, default_image(), REPO, base / "kfp_subprocess", "subprocess")
        _runs.update(uri=tracking_uri, params=p, dvc=dvc, subprocess=local)
    return _runs


def pair_hash(run_id: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient().get_run(run_id).data.tags["aepipe.pair_hash"]
