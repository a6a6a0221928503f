"""The PyTorchJob manifest for multi-node pretraining: valid YAML, replicas, resources, command."""

from __future__ import annotations

from pathlib import Path

import yaml
from torch.distributed.run import get_args_parser

from aepipe.cli import build_parser, main
from aepipe.config import parse_params
from aepipe.pytorchjob import build_pytorchjob


def job_params(**pytorchjob: object) -> object:
    return parse_params({"kubeflow": {"pytorchjob": pytorchjob}})


def containers(job: dict, replica: str) -> list[dict]:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]


def test_cli_writes_a_manifest_with_n_pods_of_m_gpus(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("kubeflow:\n  pytorchjob: {workers: 3, gpus_per_worker: 4, namespace: team-a}\n")
    out = tmp_path / "job.yaml"
    assert (
        main(
            [
                "--params",
                str(params),
                "pipeline",
                "pytorchjob",
                "-o",
                str(out),
                "--image",
                "reg.example/aepipe:1-cuda",
                "-p",
                "kubeflow.pytorchjob.memory=64Gi",
            ]
        )
        == 0
    )
    assert '"world_size": 12' in capsys.readouterr().out
    job = yaml.safe_load(out.read_text())
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == (
        "kubeflow.org/v1",
        "PyTorchJob",
        "team-a",
    )
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Master": 1, "Worker": 2}
    assert job["spec"]["nprocPerNode"] == "4"
    for replica in specs:
        (c,) = containers(job, replica)
        assert c["name"] == "pytorch" and c["image"] == "reg.example/aepipe:1-cuda"
        assert (
            c["resources"]["limits"]
            == c["resources"]["requests"]
            == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 4}
        )
        assert {"name": "pytorchjob-port", "containerPort": 23456} in c["ports"]
        assert c["securityContext"]["runAsNonRoot"] is True
        pod = specs[replica]["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "aepipe-workspace"}} in pod[
            "volumes"
        ]


def test_the_command_is_a_valid_torchrun_of_aepipe_pretrain() -> None:
    job = build_pytorchjob(job_params(workers=2, gpus_per_worker=8), "img")
    (c,) = containers(job, "Master")
    command = c["command"]
    assert command[0] == "torchrun"
    run = get_args_parser().parse_args(command[1:])  # torchrun's own parser accepts every flag
    assert (run.nnodes, run.nproc_per_node, run.rdzv_backend, run.module) == ("2", "8", "c10d", True)
    assert run.rdzv_endpoint == "$(MASTER_ADDR):$(MASTER_PORT)" and run.training_script == "aepipe.cli"
    cli = build_parser().parse_args(run.training_script_args)  # and aepipe's parser the stage's
    assert (cli.command, cli.data, cli.model, cli.params) == (
        "pretrain",
        "data/prepared",
        "models/autoencoder",
        "params.yaml",
    )
    env = {e["name"]: e for e in c["env"]}
    assert (
        env["AEPIPE_CHECKPOINT_DIR"]["value"] == "/workspace/.aepipe/checkpoints"
    )  # on the shared volume: restarts resume
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "aepipe-mlflow",
        "key": "MLFLOW_TRACKING_URI",
    }


def test_cpu_single_pod_job_has_no_worker_replicas_and_no_gpu() -> None:
    job = build_pytorchjob(job_params(workers=1, gpus_per_worker=0, procs_per_worker=4), "img")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    (c,) = containers(job, "Master")
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "--nproc-per-node=4" in c["command"]
    assert "tolerations" not in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
