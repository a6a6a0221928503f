"""``aepipe pipeline compile|submit|local|pytorchjob``: the Kubeflow pipeline from the command line,
and the PyTorchJob manifest for multi-node pretraining.

``components/`` and ``pipelines/`` are repository folders, not part of the installed package, so
these commands first find the checkout (the folder holding ``pipelines/`` and ``dvc.yaml``).
``-p key=value`` overrides are applied to params.yaml and validated before anything is compiled,
run or sent to a cluster.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from aepipe.config import Params, apply_overrides
from aepipe.errors import AepipeError
from aepipe.kfp_support import params_to_json, resolve_image

TOKEN_ENV = "AEPIPE_KFP_TOKEN"
RUNNERS = ("subprocess", "docker")
# Passed into the task containers besides kubeflow.secret_env: the thread and kernel settings of
# torch and of numpy/scipy's OpenBLAS, so a run in the image computes exactly what the same run on
# the host computes. OPENBLAS_CORETYPE matters: a host that pins it (e.g. Haswell on an AVX-512
# CPU) otherwise gets other kernels in the container, and the linear probe's weights then differ
# in the 7th digit (measured 2026-12-02: 1.7e-7, same predictions, another pair hash).
PASS_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def task_environment(params: Params, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a task container gets from this process's environment: ``kubeflow.secret_env`` (as
    the cluster's secret gives it) and :data:`PASS_ENV`, those that are set."""
    return {key: environ[key] for key in (*params.kubeflow.secret_env, *PASS_ENV) if environ.get(key)}


class ClusterError(AepipeError):
    """The Kubeflow Pipelines endpoint cannot be reached, refuses us, or rejects the run."""


def find_repo_root(start: str | Path | None = None) -> Path:
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pipelines").is_dir() and (folder / "dvc.yaml").is_file():
            return folder
    raise AepipeError(
        f"{here}: not inside an aepipe checkout (no folder holding pipelines/ and dvc.yaml at or above it); "
        "run `aepipe pipeline ...` from the repository root"
    )


def pipeline_module(root: Path) -> Any:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("pipelines.aepipe_pipeline")


def compile_pipeline(params: Params, image: str, output: str | Path, root: Path) -> dict[str, Any]:
    from kfp import compiler

    func = pipeline_module(root).build_pipeline(params, image)
    compiler.Compiler().compile(func, str(output))
    return {"pipeline": str(output), "bytes": Path(output).stat().st_size, "image": image}


def image_repository(image: str) -> str:
    """``registry:5000/team/aepipe:0.1-cuda`` -> ``registry:5000/team/aepipe`` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def docker_engine(timeout: int = 10) -> Any:
    """The Docker engine of DOCKER_HOST (or the default socket); an AepipeError when none answers."""
    import requests

    import docker

    try:
        engine = docker.from_env(timeout=timeout)
        engine.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:  # no socket, no answer
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise AepipeError(
            f"no Docker engine answers at {host} ({exc.__class__.__name__}); start one (`make docker-start` "
            "prints the DOCKER_HOST to export) or run the tasks in this environment with --runner subprocess"
        ) from None
    return engine


def pin_image(image: str, digest: str | None = None, engine: Any = None) -> tuple[str, str]:
    """(the image reference to compile, how it was pinned).

    ``--image-digest sha256:...`` pins to that digest. Otherwise, when a Docker engine holds the
    image and knows its registry digest (it was pushed from here, or pulled), that digest is used,
    so the cluster runs exactly the image tested here. An image built here and never pushed has no
    registry digest yet: it is compiled by tag, and the reason is returned.
    """
    if "@" in image:
        if digest:
            raise AepipeError(f"--image {image} already names a digest; drop --image-digest")
        return image, "digest given in the image reference"
    if digest:
        if not DIGEST.match(digest):
            raise AepipeError(
                f"--image-digest {digest!r}: expected sha256: and 64 hex digits, e.g. the RepoDigests entry "
                f"of `docker image inspect {image}`"
            )
        return f"{image}@{digest}", "--image-digest"
    if engine is None:
        return image, "tag only: no Docker engine to look the digest up"
    import docker

    try:
        found = engine.images.get(image)
    except docker.errors.ImageNotFound:
        return image, f"tag only: {image} is not in the local Docker engine"
    repo = image_repository(image)
    for ref in found.attrs.get("RepoDigests") or []:
        name, _, sha = ref.partition("@")
        if name == repo and DIGEST.match(sha):
            return f"{image}@{sha}", f"registry digest of the local image {found.id[:19]}"
    return image, (
        f"tag only: {image} (image {found.id[:19]}) was built here and never pushed, so no registry digest "
        "exists yet; push it (make image-push) and compile again to pin it"
    )


def local_engine_or_none() -> Any:
    """The Docker engine when one answers, else None (compile must work without Docker)."""
    try:
        return docker_engine(timeout=5)
    except AepipeError:
        return None


def check_host(host: str, token: str | None, timeout: float = 10.0) -> None:
    """Ask the KFP healthz endpoint once, so a wrong host or missing auth fails at once and clearly."""
    import requests

    if not host.startswith(("http://", "https://")):
        raise ClusterError(
            f"--host {host!r}: give the scheme too, e.g. http://localhost:8080 or "
            "https://kubeflow.example.com/pipeline"
        )
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(url, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise ClusterError(
            f"Kubeflow Pipelines at {host} cannot be reached ({exc.__class__.__name__}); check --host, e.g. "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` then --host http://localhost:8080"
        ) from None
    if resp.status_code in (401, 403) or resp.is_redirect:
        where = f", redirected to {resp.headers.get('Location')}" if resp.is_redirect else ""
        raise ClusterError(
            f"Kubeflow Pipelines at {host} refused authentication (HTTP {resp.status_code}{where}); put a "
            f"bearer token for it in ${TOKEN_ENV} (e.g. `kubectl create token default-editor -n <namespace>`)"
        )
    if not resp.ok:
        raise ClusterError(
            f"{url} answered HTTP {resp.status_code}; is {host} the Kubeflow Pipelines API (ml-pipeline-ui)?"
        )


def submit(
    params: Params, image: str, host: str, root: Path, experiment: str, run_name: str, namespace: str | None
) -> dict[str, Any]:
    token = os.environ.get(TOKEN_ENV) or None
    check_host(host, token)
    import kfp
    from kfp_server_api.exceptions import ApiException

    func = pipeline_module(root).build_pipeline(params, image)
    try:
        client = kfp.Client(host=host, existing_token=token, namespace=namespace)
        run = client.create_run_from_pipeline_func(
            func,
            arguments={"params_json": params_to_json(params)},
            run_name=run_name,
            experiment_name=experiment,
        )
    except ApiException as exc:
        raise ClusterError(
            f"Kubeflow Pipelines at {host} rejected the run (HTTP {exc.status} {exc.reason}): "
            f"{str(exc.body)[:500]}"
        ) from None
    except (OSError, TimeoutError) as exc:  # urllib3 connection errors are OSErrors
        raise ClusterError(
            f"Kubeflow Pipelines at {host} failed mid-request ({exc.__class__.__name__}: {exc})"
        ) from None
    return {
        "run_id": run.run_id,
        "run_url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
        "experiment": experiment,
        "image": image,
    }


def run_local(
    params: Params,
    image: str,
    root: Path,
    pipeline_root: str | Path | None = None,
    runner: str = "subprocess",
) -> dict[str, Any]:
    """The whole pipeline with kfp.local: one subprocess per task in this environment (``subprocess``),
    or one container per task in the built image (``docker``), as uid ``kubeflow.run_as_user`` on a
    read-only root filesystem, artifacts bind-mounted between containers, MLflow reached over the
    host network with the tracking URI and credentials passed as environment (as the cluster secret
    passes them). Without a GPU for the tasks, ``kubeflow.accelerator_limit`` is set to 0 for the run.
    """
    from kfp import local

    if runner not in RUNNERS:
        raise AepipeError(f"--runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    pipeline_root = Path(pipeline_root or root / "local_outputs").resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"runner": runner}
    if runner == "docker":
        kfp_runner, gpus, info["image"], info["image_id"] = _docker_runner(params, image, pipeline_root)
        image = info["image"]
    else:
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # task subprocesses must share one store
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        kfp_runner, gpus = local.SubprocessRunner(use_venv=False), _host_has_cuda()
    if not gpus and params.kubeflow.accelerator_limit:
        params = apply_overrides(params, ["kubeflow.accelerator_limit=0"], "params (no GPU for local tasks)")
    info["gpu"] = gpus
    local.init(runner=kfp_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    func = pipeline_module(root).build_pipeline(params, image)
    before = set(pipeline_root.iterdir())
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            func(params_json=params_to_json(params))  # kfp.local runs it on the call
        except RuntimeError as exc:
            raise AepipeError(
                f"local pipeline failed: {exc} (the failing task's log is printed above)"
            ) from None
    seconds = time.perf_counter() - start
    run_dir = _new_run_dir(pipeline_root, before)
    metrics_path = _task_output(run_dir, "evaluate", "metrics")
    return {
        "seconds": round(seconds, 2),
        **info,
        "tracking_uri": os.environ["MLFLOW_TRACKING_URI"],
        "outputs": str(run_dir),
        "metrics": json.loads(metrics_path.read_text()),
        "metrics_path": str(metrics_path),
        "registration": json.loads(_task_output(run_dir, "register", "registration").read_text()),
    }


def _host_has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _new_run_dir(pipeline_root: Path, before: set[Path]) -> Path:
    new = [p for p in pipeline_root.iterdir() if p not in before and p.is_dir()]
    if len(new) != 1:
        raise AepipeError(f"{pipeline_root}: expected one new pipeline run folder, found {len(new)}")
    return new[0]


def _task_output(run_dir: Path, task: str, name: str) -> Path:
    found = sorted(run_dir.glob(f"**/{task}/{name}"))
    if not found:
        raise AepipeError(f"{run_dir}: the {task} task left no {name!r} output")
    return found[0]


def _docker_runner(params: Params, image: str, pipeline_root: Path) -> tuple[Any, bool, str, str]:
    """kfp's DockerRunner set up like a cluster task: (runner, GPUs available, image tag, image id)."""
    from kfp import local

    from aepipe.tracking.lineage import client, experiment_id

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        raise AepipeError(
            "--runner docker needs an MLflow tracking server the containers can reach: export "
            "MLFLOW_TRACKING_URI=http://127.0.0.1:<port> of a server started with --artifacts-destination "
            f"(proxied artifacts); got {uri or 'nothing (the local sqlite store is a file on this host)'}"
        )
    engine = docker_engine()
    import docker

    try:
        image_id = engine.images.get(image).id
    except docker.errors.ImageNotFound:
        raise AepipeError(
            f"image {image} is not in the Docker engine; build it with `make image` (README: Kubeflow) "
            "or name another with --image"
        ) from None
    # Pin this run to the image as it is now: a tag that names its id (a rebuild moves the
    # version tag, never this one).
    pinned = f"{image_repository(image)}:local-{image_id.removeprefix('sha256:')[:12]}"
    engine.images.get(image_id).tag(pinned)
    mlflow_client = client()  # fails fast, naming the URI, when the server is down
    exp_id = experiment_id(mlflow_client, params.mlflow.experiment)
    location = mlflow_client.get_experiment(exp_id).artifact_location or ""
    if urlparse(location).scheme in ("", "file"):
        raise AepipeError(
            f"MLflow experiment {params.mlflow.experiment!r} keeps its artifacts at {location}, a path on "
            "this host the containers cannot write to; run the server with --artifacts-destination DIR "
            "(artifacts proxied over HTTP) and use an experiment created there (mlflow.experiment)"
        )
    uid = params.kubeflow.run_as_user
    if os.geteuid() == 0:
        os.chown(pipeline_root, uid, uid)  # tasks write their outputs there as uid run_as_user
    elif os.geteuid() != uid:
        pipeline_root.chmod(0o777)
    env = task_environment(params)
    gpus = "nvidia" in (engine.info().get("Runtimes") or {})
    run_args: dict[str, Any] = {
        "network_mode": "host",  # MLflow (and S3) on 127.0.0.1, as a cluster service would be reached
        "environment": env,
        "user": f"{uid}:{uid}",
        "read_only": True,  # the image is never written to: HOME, caches and temp files live in /tmp
        "tmpfs": {"/tmp": "rw,exec,mode=1777"},
        "shm_size": "1g",
    }
    if gpus:
        run_args["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return local.DockerRunner(**run_args), gpus, pinned, image_id


def _params(args: argparse.Namespace, params: Params) -> tuple[Params, str, Path]:
    root = find_repo_root()
    params = apply_overrides(params, args.param, args.params)
    return params, resolve_image(params, args.image), root


def _pinned(args: argparse.Namespace, image: str) -> tuple[str, str]:
    """compile's and submit's image, pinned the same way (``pin_image``): what is compiled to a
    file is what is submitted directly."""
    engine = None if args.image_digest or "@" in image else local_engine_or_none()
    return pin_image(image, args.image_digest, engine)


def cmd_compile(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    params, image, root = _params(args, params)
    image, how = _pinned(args, image)
    return compile_pipeline(params, image, args.output, root) | {"image_pinned": how}


def cmd_submit(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    params, image, root = _params(args, params)
    run_name = args.run_name or f"aepipe-{time.strftime('%Y%m%d-%H%M%S')}"
    image, how = _pinned(args, image)
    return submit(
        params, image, args.host, root, args.experiment or params.mlflow.experiment, run_name, args.namespace
    ) | {"image_pinned": how}


def cmd_local(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    params, image, root = _params(args, params)
    return run_local(params, image, root, args.pipeline_root, args.runner)


def cmd_pytorchjob(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    from aepipe.io import write_text
    from aepipe.pytorchjob import build_pytorchjob, procs_per_pod

    params = apply_overrides(params, args.param, args.params)  # no checkout needed: nothing is compiled
    image = resolve_image(params, args.image)
    write_text(args.output, yaml.safe_dump(build_pytorchjob(params, image), sort_keys=False))
    job = params.kubeflow.pytorchjob
    return {
        "manifest": str(args.output),
        "image": image,
        "pods": job.workers,
        "world_size": job.workers * procs_per_pod(params),
        "apply": f"kubectl apply -f {args.output}",
    }


def add_pipeline_commands(subparsers: Any) -> None:
    """``aepipe pipeline {compile,submit,local}``; main() validates params.yaml before any of them runs."""
    parser = subparsers.add_parser("pipeline", help="compile, submit or locally run the Kubeflow pipeline")
    sub = parser.add_subparsers(dest="pipeline_command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml value, e.g. -p pretrain.epochs=50",
    )
    shared.add_argument(
        "--image",
        help="component image (default: env AEPIPE_IMAGE, else kubeflow.image, else the `make image` tag)",
    )

    pinned = argparse.ArgumentParser(add_help=False)  # compile and submit pin the image alike
    pinned.add_argument(
        "--image-digest",
        metavar="sha256:HEX",
        help="pin the image to this registry digest (default: the digest the local Docker engine knows "
        "for the image, when it was pushed or pulled here)",
    )

    p = sub.add_parser("compile", parents=[shared, pinned], help="write the pipeline as KFP YAML")
    p.add_argument("-o", "--output", default="pipeline.yaml", help="output file (default: pipeline.yaml)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser(
        "submit",
        parents=[shared, pinned],
        help=f"start a run on a Kubeflow Pipelines cluster (bearer token from ${TOKEN_ENV})",
    )
    p.add_argument("--host", required=True, help="KFP endpoint, e.g. http://localhost:8080")
    p.add_argument("--experiment", help="KFP experiment (default: mlflow.experiment)")
    p.add_argument("--run-name", help="run name (default: aepipe-<timestamp>)")
    p.add_argument("--namespace", help="Kubeflow profile namespace on multi-user clusters")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser(
        "local", parents=[shared], help="run the whole pipeline here with kfp.local (no cluster)"
    )
    p.add_argument("--pipeline-root", help="where task outputs go (default: <repo>/local_outputs)")
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        default="subprocess",
        help="subprocess: each task in this environment; docker: each task in the image, as on a cluster",
    )
    p.set_defaults(fn=cmd_local)

    p = sub.add_parser(
        "pytorchjob",
        parents=[shared],
        help="write a Kubeflow PyTorchJob manifest for multi-node pretraining (kubeflow.pytorchjob)",
    )
    p.add_argument("-o", "--output", default="pytorchjob.yaml", help="output file (default: pytorchjob.yaml)")
    p.set_defaults(fn=cmd_pytorchjob)
