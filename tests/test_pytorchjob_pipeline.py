"""The pipeline's pretrain task as a PyTorchJob launcher (kubeflow.pytorchjob.in_pipeline).

No cluster here: the compiled YAML is checked, the wait loop is driven with status objects as the
Training Operator writes them, and the manifest's own torchrun command is run for real in the
staged run folder (one CPU pod's worth), so what the pods would execute is exercised end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aepipe.config import parse_params
from aepipe.errors import ModelError
from aepipe.pipeline_cli import compile_pipeline, find_repo_root
from aepipe.pytorchjob import (
    build_pytorchjob,
    collect_outputs,
    job_state,
    run_name,
    stage_run_dir,
    wait_for_job,
)
from aepipe.stages import prepare
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]


def status(*conditions: tuple[str, str, str]) -> dict:
    return {"status": {"conditions": [{"type": t, "status": s, "message": m} for t, s, m in conditions]}}


def test_in_pipeline_pretrain_task_launches_the_job_and_mounts_its_volume(tmp_path: Path) -> None:
    params = parse_params(
        {"kubeflow": {"pytorchjob": {"in_pipeline": True, "volume_claim": "ws", "workdir": "/ws"}}}
    )
    compile_pipeline(params, "reg.example/aepipe:1-cuda", tmp_path / "p.yaml", find_repo_root())
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    tasks = stages(spec)
    assert "pretrain" not in tasks and "pretrain-pytorchjob" in tasks
    assert (
        tasks["pretrain-pytorchjob"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"]
        == "reg.example/aepipe:1-cuda"
    )
    assert (
        tasks["extract"]["inputs"]["artifacts"]["autoencoder"]["taskOutputArtifact"]["producerTask"]
        == "pretrain-pytorchjob"
    )
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-pretrain-pytorchjob"]
    assert executor["pvcMount"][0]["mountPath"] == "/ws" and executor["pvcMount"][0]["constant"] == "ws"
    assert "tolerations" not in executor  # the launcher waits; the job's pods get the GPUs
    container = spec["deploymentSpec"]["executors"]["exec-pretrain-pytorchjob"]["container"]
    assert "accelerator" not in container.get("resources", {})
    # the launcher's own pod is small (kubeflow.pytorchjob.launcher) and may retry: it finds its job
    res = container["resources"]
    assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == ("500m", "1Gi")
    assert tasks["pretrain-pytorchjob"]["retryPolicy"]["maxRetryCount"] == 2


def stages(spec: dict) -> dict:
    """The stage tasks, inside the exit handler's sub-DAG."""
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_default_pipeline_keeps_the_single_gpu_pretrain_task(tmp_path: Path) -> None:
    compile_pipeline(parse_params({}), "img", tmp_path / "p.yaml", find_repo_root())
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert "pretrain" in stages(spec) and "pretrain-pytorchjob" not in stages(spec)


def test_job_state_reads_the_operators_conditions() -> None:
    assert job_state({}) is None
    assert job_state(status(("Created", "True", ""), ("Running", "True", ""))) is None
    assert job_state(status(("Running", "True", ""), ("Succeeded", "True", "done"))) == ("Succeeded", "done")
    assert job_state(status(("Running", "False", ""), ("Failed", "True", "OOMKilled"))) == (
        "Failed",
        "OOMKilled",
    )


def test_wait_returns_on_success_and_names_the_job_on_failure_or_timeout() -> None:
    answers = iter(
        [status(("Running", "True", "")), status(("Running", "True", "")), status(("Succeeded", "True", ""))]
    )
    slept: list[float] = []
    job = wait_for_job(lambda: next(answers), "ns", "job-1", 100, 5, sleep=slept.append)
    assert job_state(job) == ("Succeeded", "") and slept == [5, 5]

    with pytest.raises(
        ModelError, match=r"PyTorchJob ns/job-1 failed: OOMKilled; see `kubectl -n ns logs job-1-master-0`"
    ):
        wait_for_job(
            lambda: status(("Failed", "True", "OOMKilled")), "ns", "job-1", 100, 5, sleep=lambda s: None
        )

    now = [0.0]
    with pytest.raises(
        ModelError, match=r"did not finish within 0\.00 h; raise kubeflow.pytorchjob.timeout_hours"
    ):
        wait_for_job(
            lambda: status(("Running", "True", "")),
            "ns",
            "job-1",
            10,
            4,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert now[0] == 12  # polled at 0, 4, 8, 12: gave up at the first poll past the deadline


def test_run_name_is_a_dns_label_piece() -> None:
    assert run_name("3F2A1B4C-9D8E-4F00-8000-000000000000") == "3f2a1b4c-9d8"
    assert run_name("run/with spaces__x") == "run-with-spa"
    with pytest.raises(ModelError, match="empty execution key"):
        run_name("--")


def test_collect_names_what_the_job_did_not_write(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"lacks models/autoencoder, metrics/pretrain.json, plots"):
        collect_outputs(tmp_path, tmp_path / "m", tmp_path / "metrics.json", tmp_path / "plots")


@pytest.mark.slow
def test_the_jobs_own_command_trains_in_the_staged_folder_and_outputs_come_back(tmp_path: Path) -> None:
    """Stage a run folder, run the manifest's torchrun command there (1 CPU pod), collect."""
    params = parse_params(
        {
            "pretrain": {"epochs": 1},
            "model": {"name": "conv", "width": 4},
            "kubeflow": {
                "pytorchjob": {
                    "workers": 1,
                    "gpus_per_worker": 0,
                    "procs_per_worker": 1,
                    "workdir": str(tmp_path / "ws"),
                }
            },
        }
    )
    data = tmp_path / "prepared"
    prepare.run(params, data)
    run_dir = tmp_path / "ws" / "runs" / run_name("kfp-run-1")
    stage_run_dir(run_dir, params, data)

    job = build_pytorchjob(
        params,
        "img",
        workdir=str(run_dir),
        name="aepipe-pretrain-kfp-run-1",
        extra_env={"AEPIPE_EXECUTION_KEY": "kfp-run-1"},
    )
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert container["workingDir"] == str(run_dir)
    assert {"name": "AEPIPE_EXECUTION_KEY", "value": "kfp-run-1"} in container["env"]
    assert "--rdzv-id=aepipe-pretrain-kfp-run-1" in container["command"]
    # What Kubernetes would expand, and the venv's torchrun instead of the image's PATH one.
    command = [
        c.replace("$(MASTER_ADDR):$(MASTER_PORT)", f"127.0.0.1:{free_port()}") for c in container["command"]
    ]
    command[0] = str(Path(sys.executable).parent / "torchrun")
    env = {
        **os.environ,
        **{e["name"]: e["value"] for e in container["env"] if "value" in e},
        "AEPIPE_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "out"
    metrics = collect_outputs(run_dir, out / "autoencoder", out / "metrics.json", out / "plots")
    assert metrics["epochs"] == 1 and metrics["final_val_loss"] > 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["pretrain_loss.csv", "pretrain_loss.png"]
    from aepipe.models.io import load_autoencoder

    load_autoencoder(out / "autoencoder")  # a loadable model, as extract will load it
