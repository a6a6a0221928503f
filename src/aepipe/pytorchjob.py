"""Multi-node pretraining on Kubernetes: a Kubeflow Training Operator ``PyTorchJob`` manifest.

Written by ``aepipe pipeline pytorchjob -o job.yaml`` from ``kubeflow.pytorchjob`` and then
applied with ``kubectl apply -f job.yaml``. Every pod runs the same command,
``torchrun --nnodes N --nproc-per-node M ... -m aepipe.cli pretrain``, from the working
directory on a shared volume (the checkout with params.yaml and data/prepared); the pods meet
through torchrun's c10d rendezvous at the master pod (``MASTER_ADDR``/``MASTER_PORT``, which the
operator sets in every pod of every version), so no operator-specific rank variables are needed.
Global rank 0 writes the outputs and MLflow records onto that volume; checkpoints live there
too, so a restarted pod (``backoff_limit``) resumes from the last epoch.

With ``kubeflow.pytorchjob.in_pipeline: true`` the pipeline's pretrain task does this itself
(``run_in_pipeline``): it stages the prepared data and the params on the volume under
``<workdir>/runs/<run id>``, creates the job there through the Kubernetes API, waits for it, and
copies the autoencoder, metrics and plots back into its KFP output artifacts, so the rest of the
pipeline does not change. A retried task finds the job of its run: a running one is waited for, a
finished one (Failed, or Succeeded but not collected) is deleted and created again, so a retry
really retries. After a success the job and the staged folder are deleted
(``kubeflow.pytorchjob.cleanup``); the operator deletes any finished job after
``ttl_seconds_after_finished``.
"""

from __future__ import annotations

import copy
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aepipe.config import Params
from aepipe.errors import ModelError
from aepipe.io import write_text
from aepipe.paths import AUTOENCODER, DATA, PLOT_FILES, PLOTS, cli_args, metrics_file

API_VERSION = "kubeflow.org/v1"
CONTAINER = "pytorch"  # the operator finds the training container and its port by these names
PORT_NAME = "pytorchjob-port"
PRETRAIN_ARGS = ["pretrain", *cli_args("pretrain")]  # the paths dvc.yaml gives it


def torchrun_command(params: Params, name: str | None = None) -> list[str]:
    job = params.kubeflow.pytorchjob
    return [
        "torchrun",
        f"--nnodes={job.workers}",
        f"--nproc-per-node={procs_per_pod(params)}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)",  # expanded by Kubernetes from the operator's env
        f"--rdzv-id={name or job.name}",
        "-m",
        "aepipe.cli",
        "--params",
        "params.yaml",
        *PRETRAIN_ARGS,
    ]


def procs_per_pod(params: Params) -> int:
    job = params.kubeflow.pytorchjob
    return job.gpus_per_worker or job.procs_per_worker


def build_pytorchjob(
    params: Params,
    image: str,
    workdir: str | None = None,
    name: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The PyTorchJob as a dict (YAML-ready): Master x 1 + Worker x (workers - 1).

    ``workdir`` (a folder on the volume, default ``kubeflow.pytorchjob.workdir``), ``name`` and
    ``extra_env`` are what the in-pipeline launcher sets per run.
    """
    kf, job = params.kubeflow, params.kubeflow.pytorchjob
    resources: dict[str, Any] = {"cpu": job.cpu, "memory": job.memory}
    if job.gpus_per_worker:
        resources[kf.accelerator_type] = job.gpus_per_worker
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": kf.secret, "key": key}}} for key in kf.secret_env
    ]
    env += [
        {"name": "AEPIPE_CHECKPOINT_DIR", "value": f"{job.workdir}/.aepipe/checkpoints"},
        {"name": "AEPIPE_PROGRESS", "value": "0"},
    ]
    env += [{"name": key, "value": value} for key, value in (extra_env or {}).items()]
    container = {
        "name": CONTAINER,
        "image": image,
        "workingDir": workdir or job.workdir,
        "command": torchrun_command(params, name),
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": job.port}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {
            "runAsUser": kf.run_as_user,
            "runAsGroup": kf.run_as_user,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
        },
        "volumeMounts": [
            {"name": "workspace", "mountPath": job.workdir},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
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
        template = {
            "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
            "spec": copy.deepcopy(pod),
        }  # no YAML aliases
        return {"replicas": count, "restartPolicy": "OnFailure", "template": template}

    specs = {"Master": replicas(1)}
    if job.workers > 1:
        specs["Worker"] = replicas(job.workers - 1)
    metadata: dict[str, Any] = {"name": name or job.name, "labels": {"app.kubernetes.io/part-of": "aepipe"}}
    if job.namespace:
        metadata["namespace"] = job.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(procs_per_pod(params)),
            "runPolicy": run_policy(params),
            "pytorchReplicaSpecs": specs,
        },
    }


def run_policy(params: Params) -> dict[str, Any]:
    job = params.kubeflow.pytorchjob
    policy: dict[str, Any] = {"backoffLimit": job.backoff_limit, "cleanPodPolicy": "None"}
    if job.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = job.ttl_seconds_after_finished
    return policy


# --- in the pipeline: submit, wait, collect -------------------------------------------------

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
OUTPUTS = {"model": AUTOENCODER, "metrics": metrics_file("pretrain"), "plots": PLOTS}


def run_name(execution_key: str) -> str:
    """A DNS-1123 label piece from the KFP run id: the job's name suffix and its folder on the volume."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", execution_key.lower()).strip("-")
    if not cleaned:
        raise ModelError("the pretrain task got an empty execution key; the pipeline passes the KFP run id")
    return cleaned[:12].rstrip("-")


def job_state(job: dict[str, Any]) -> tuple[str, str] | None:
    """("Succeeded" | "Failed", message) once the operator says so, else None (still running)."""
    for cond in reversed((job.get("status") or {}).get("conditions") or []):
        if cond.get("type") in ("Succeeded", "Failed") and str(cond.get("status")) == "True":
            return str(cond["type"]), str(cond.get("message") or cond.get("reason") or "")
    return None


def wait_for_job(
    get: Callable[[], dict[str, Any]],
    namespace: str,
    name: str,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll ``get`` (the job object) until it succeeds; a failure or the timeout is a ModelError."""
    deadline = clock() + timeout_s
    label = f"{namespace}/{name}"
    while True:
        job = get()
        state = job_state(job)
        if state is not None:
            kind, message = state
            if kind == "Succeeded":
                return job
            raise ModelError(
                f"PyTorchJob {label} failed: {message or 'no message'}; "
                f"see `kubectl -n {namespace} logs {name}-master-0` "
                "(checkpoints on the volume let a re-run resume)"
            )
        if clock() >= deadline:
            raise ModelError(
                f"PyTorchJob {label} did not finish within {timeout_s / 3600:.2f} h; raise "
                "kubeflow.pytorchjob.timeout_hours or check "
                f"`kubectl -n {namespace} describe pytorchjob {name}`"
            )
        sleep(poll_s)


def stage_run_dir(run_dir: Path, params: Params, data_dir: str | Path) -> None:
    """What the job's pods read: params.yaml and data/prepared, under the run's own folder on the volume."""
    import yaml

    shutil.rmtree(run_dir / DATA, ignore_errors=True)
    shutil.copytree(data_dir, run_dir / DATA)
    write_text(run_dir / "params.yaml", yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))


def collect_outputs(
    run_dir: Path, model_dir: str | Path, metrics_path: str | Path, plots_dir: str | Path
) -> dict[str, Any]:
    """Copy what rank 0 wrote on the volume into the task's output artifacts; return the metrics."""
    import json

    missing = [rel for rel in OUTPUTS.values() if not (run_dir / rel).exists()]
    if missing:
        raise ModelError(
            f"the PyTorchJob succeeded but {run_dir} lacks {', '.join(missing)}; check that rank 0 ran "
            "`aepipe pretrain` in that folder"
        )
    shutil.copytree(run_dir / AUTOENCODER, model_dir, dirs_exist_ok=True)
    shutil.copy2(run_dir / OUTPUTS["metrics"], metrics_path)
    Path(plots_dir).mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES["pretrain"]:
        if (run_dir / PLOTS / name).is_file():
            shutil.copy2(run_dir / PLOTS / name, Path(plots_dir) / name)
    return dict(json.loads(Path(metrics_path).read_text()))


class JobLauncher:
    """Create, find, replace, wait for and delete one PyTorchJob through the Kubernetes API.

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (errors arrive as its ``ApiException``);
    ``sleep`` and ``clock`` are injectable so the waits can be driven in tests.
    """

    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        poll_s: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        gone_timeout_s: float = 600.0,
    ) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.poll_s, self.sleep, self.clock, self.gone_timeout_s = poll_s, sleep, clock, gone_timeout_s
        self.label = f"{namespace}/{name}"

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client import ApiException

        try:
            job: dict[str, Any] = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
            return job
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._refused("reading", exc) from None

    def submit(self, manifest: dict[str, Any]) -> str:
        """Make the job of this run exist and be running; returns what was done:
        ``created``, ``waiting`` (a retried task found its job still running) or ``recreated``
        (it found the job finished: Failed, or Succeeded without its outputs collected)."""
        from kubernetes.client import ApiException

        try:
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
            return "created"
        except ApiException as exc:
            if exc.status != 409:  # 409: a job of this name exists (this run's, from an earlier attempt)
                raise self._refused("creating", exc) from None
        existing = self.get()
        if existing is not None and job_state(existing) is None and not _deleting(existing):
            print(f"aepipe: PyTorchJob {self.label} of this run is still running; waiting for it")
            return "waiting"
        if existing is not None:
            state = job_state(existing)
            print(
                f"aepipe: PyTorchJob {self.label} exists ({state[0] if state else 'being deleted'}); "
                "recreating it"
            )
            self.delete()
        self.wait_gone()
        try:
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        except ApiException as exc:
            raise self._refused("creating", exc) from None
        return "recreated"

    def delete(self) -> None:
        from kubernetes.client import ApiException, V1DeleteOptions

        try:
            self.api.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                body=V1DeleteOptions(propagation_policy="Background"),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise self._refused("deleting", exc) from None

    def wait_gone(self) -> None:
        deadline = self.clock() + self.gone_timeout_s
        while self.get() is not None:
            if self.clock() >= deadline:
                raise ModelError(
                    f"PyTorchJob {self.label} was deleted but still exists after {self.gone_timeout_s:.0f} s "
                    f"(a finalizer?); see `kubectl -n {self.namespace} get pytorchjob {self.name} -o yaml`"
                )
            self.sleep(min(self.poll_s, 5.0))

    def wait(self, timeout_s: float) -> dict[str, Any]:
        def current() -> dict[str, Any]:
            job = self.get()
            if job is None:
                raise ModelError(
                    f"PyTorchJob {self.label} disappeared while the pipeline waited for it (deleted by hand?)"
                )
            return job

        return wait_for_job(
            current, self.namespace, self.name, timeout_s, self.poll_s, self.clock, self.sleep
        )

    def _refused(self, what: str, exc: Any) -> ModelError:
        return ModelError(
            f"{what} PyTorchJob {self.label} was refused ({exc.status} {exc.reason}); the pipeline's service "
            "account needs create, get and delete on pytorchjobs.kubeflow.org in that namespace"
        )


def _deleting(job: dict[str, Any]) -> bool:
    return bool((job.get("metadata") or {}).get("deletionTimestamp"))


def run_in_pipeline(
    params: Params,
    image: str,
    execution_key: str,
    data_dir: str | Path,
    model_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    api: Any = None,
    namespace: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The pretrain task's body when ``kubeflow.pytorchjob.in_pipeline``: stage, submit, wait, collect,
    clean up.

    Runs inside a KFP pod with the volume mounted at ``workdir`` and a service account allowed to
    create, get and delete ``pytorchjobs.kubeflow.org`` in the namespace (README). ``api`` (a
    ``CustomObjectsApi``) and ``namespace`` default to the in-cluster ones.
    """
    from aepipe.tracking.lineage import KEY_ENV

    job = params.kubeflow.pytorchjob
    suffix = run_name(execution_key)
    name = f"{job.name}-{suffix}"
    run_dir = Path(job.workdir) / "runs" / suffix
    stage_run_dir(run_dir, params, data_dir)
    manifest = build_pytorchjob(
        params, image, workdir=str(run_dir), name=name, extra_env={KEY_ENV: execution_key}
    )
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    namespace = namespace or job.namespace or SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    launcher = JobLauncher(api, namespace, name, job.poll_seconds, sleep, clock)
    action = launcher.submit(manifest)
    launcher.wait(job.timeout_hours * 3600)
    result = collect_outputs(run_dir, model_dir, metrics_path, plots_dir)
    if job.cleanup:  # the outputs are in the task's artifacts now; a failure keeps both for inspection
        launcher.delete()
        shutil.rmtree(run_dir, ignore_errors=True)
    return {**result, "pytorchjob": name, "pytorchjob_action": action}
