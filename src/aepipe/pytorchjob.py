"""Multi-node pretraining on Kubernetes: a Kubeflow Training Operator ``PyTorchJob`` manifest.

Written by ``aepipe pipeline pytorchjob -o job.yaml`` from ``kubeflow.pytorchjob`` and then
applied with ``kubectl apply -f job.yaml``. Every pod runs the same command,
``torchrun --nnodes N --nproc-per-node M ... -m aepipe.cli pretrain``, from the working
directory on a shared volume (the checkout with params.yaml and data/prepared); the pods meet
through torchrun's c10d rendezvous at the master pod (``MASTER_ADDR``/``MASTER_PORT``, which the
operator sets in every pod of every version), so no operator-specific rank variables are needed.
Global rank 0 writes the outputs and MLflow records onto that volume; checkpoints live there
too, so a restarted pod (``backoff_limit``) resumes from the last epoch.
"""

from __future__ import annotations

import copy
from typing import Any

from aepipe.cli import AUTOENCODER, DATA, PLOTS
from aepipe.config import Params

API_VERSION = "kubeflow.org/v1"
CONTAINER = "pytorch"  # the operator finds the training container and its port by these names
PORT_NAME = "pytorchjob-port"
PRETRAIN_ARGS = ["pretrain", "--data", DATA, "--model", AUTOENCODER, "--metrics", "metrics/pretrain.json", "--plots", PLOTS]


def torchrun_command(params: Params) -> list[str]:
    job = params.kubeflow.pytorchjob
    return [
        "torchrun",
        f"--nnodes={job.workers}",
        f"--nproc-per-node={procs_per_pod(params)}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)",  # expanded by Kubernetes from the operator's env
        f"--rdzv-id={job.name}",
        "-m", "aepipe.cli", "--params", "params.yaml", *PRETRAIN_ARGS,
    ]


def procs_per_pod(params: Params) -> int:
    job = params.kubeflow.pytorchjob
    return job.gpus_per_worker or job.procs_per_worker


def build_pytorchjob(params: Params, image: str) -> dict[str, Any]:
    """The PyTorchJob as a dict (YAML-ready): Master x 1 + Worker x (workers - 1)."""
    kf, job = params.kubeflow, params.kubeflow.pytorchjob
    resources: dict[str, Any] = {"cpu": job.cpu, "memory": job.memory}
    if job.gpus_per_worker:
        resources[kf.accelerator_type] = job.gpus_per_worker
    env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": kf.secret, "key": key}}} for key in kf.secret_env]
    env += [{"name": "AEPIPE_CHECKPOINT_DIR", "value": f"{job.workdir}/.aepipe/checkpoints"}, {"name": "AEPIPE_PROGRESS", "value": "0"}]
    container = {
        "name": CONTAINER,
        "image": image,
        "workingDir": job.workdir,
        "command": torchrun_command(params),
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": job.port}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {"runAsUser": kf.run_as_user, "runAsGroup": kf.run_as_user, "runAsNonRoot": True, "allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "workspace", "mountPath": job.workdir}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": job.volume_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": kf.shm_size}},
        ],
    }
    if job.gpus_per_worker:
        pod["tolerations"] = [{"key": kf.gpu_toleration, "operator": "Exists", "effect": "NoSchedule"}]

    def replicas(count: int) -> dict[str, Any]:
        template = {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}, "spec": copy.deepcopy(pod)}  # no YAML aliases
        return {"replicas": count, "restartPolicy": "OnFailure", "template": template}

    specs = {"Master": replicas(1)}
    if job.workers > 1:
        specs["Worker"] = replicas(job.workers - 1)
    metadata: dict[str, Any] = {"name": job.name, "labels": {"app.kubernetes.io/part-of": "aepipe"}}
    if job.namespace:
        metadata["namespace"] = job.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(procs_per_pod(params)),
            "runPolicy": {"backoffLimit": job.backoff_limit, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": specs,
        },
    }
