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
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from aepipe.config import Params, parse_params
from aepipe.errors import AepipeError
from aepipe.kfp_support import params_to_json, resolve_image

TOKEN_ENV = "AEPIPE_KFP_TOKEN"


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


def apply_overrides(params: Params, overrides: list[str], source: str = "params.yaml") -> Params:
    """``["pretrain.epochs=3", ...]`` applied to the validated params, then validated again."""
    data = params.model_dump(mode="json")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise AepipeError(f"-p {item!r}: expected KEY=VALUE, e.g. -p pretrain.epochs=50")
        *parents, leaf = key.split(".")
        node = data
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AepipeError(f"-p {item!r}: {'.'.join(parents[: i + 1])} is a value, not a section")
        node[leaf] = yaml.safe_load(text)
    return parse_params(data, f"{source} with -p overrides" if overrides else source)


def compile_pipeline(params: Params, image: str, output: str | Path, root: Path) -> dict[str, Any]:
    from kfp import compiler

    func = pipeline_module(root).build_pipeline(params, image)
    compiler.Compiler().compile(func, str(output))
    return {"pipeline": str(output), "bytes": Path(output).stat().st_size, "image": image}


def check_host(host: str, token: str | None, timeout: float = 10.0) -> None:
    """Ask the KFP healthz endpoint once, so a wrong host or missing auth fails at once and clearly."""
    import requests

    if not host.startswith(("http://", "https://")):
        raise ClusterError(
            f"--host {host!r}: give the scheme too, e.g. http://localhost:8080 or https://kubeflow.example.com/pipeline"
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
            f"Kubeflow Pipelines at {host} refused authentication (HTTP {resp.status_code}{where}); "
            f"put a bearer token for it in ${TOKEN_ENV} (e.g. `kubectl create token default-editor -n <namespace>`)"
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
            f"Kubeflow Pipelines at {host} rejected the run (HTTP {exc.status} {exc.reason}): {str(exc.body)[:500]}"
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
    params: Params, image: str, root: Path, pipeline_root: str | Path | None = None
) -> dict[str, Any]:
    """The whole pipeline in this environment with kfp.local (one subprocess per task; no cluster, no Docker)."""
    from kfp import local

    if not os.environ.get(
        "MLFLOW_TRACKING_URI"
    ):  # task subprocesses must share one store, whatever their cwd
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    pipeline_root = Path(pipeline_root or root / "local_outputs").resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    func = pipeline_module(root).build_pipeline(params, image)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        try:
            task = func(params_json=params_to_json(params))  # kfp.local runs it on the call
        except RuntimeError as exc:
            raise AepipeError(
                f"local pipeline failed: {exc} (the failing task's log is printed above)"
            ) from None
    seconds = time.perf_counter() - start
    metrics, registration = task.outputs["metrics"], task.outputs["registration"]
    return {
        "seconds": round(seconds, 2),
        "tracking_uri": os.environ["MLFLOW_TRACKING_URI"],
        "metrics": dict(metrics.metadata),
        "metrics_path": metrics.path,
        "registration": json.loads(Path(registration.path).read_text()),
    }


def _params(args: argparse.Namespace, params: Params) -> tuple[Params, str, Path]:
    root = find_repo_root()
    params = apply_overrides(params, args.param, args.params)
    return params, resolve_image(params, args.image), root


def cmd_compile(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    params, image, root = _params(args, params)
    return compile_pipeline(params, image, args.output, root)


def cmd_submit(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    params, image, root = _params(args, params)
    run_name = args.run_name or f"aepipe-{time.strftime('%Y%m%d-%H%M%S')}"
    return submit(
        params, image, args.host, root, args.experiment or params.mlflow.experiment, run_name, args.namespace
    )


def cmd_local(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    params, image, root = _params(args, params)
    return run_local(params, image, root, args.pipeline_root)


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

    p = sub.add_parser("compile", parents=[shared], help="write the pipeline as KFP YAML")
    p.add_argument("-o", "--output", default="pipeline.yaml", help="output file (default: pipeline.yaml)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser(
        "submit",
        parents=[shared],
        help=f"start a run on a Kubeflow Pipelines cluster (bearer token from ${TOKEN_ENV})",
    )
    p.add_argument("--host", required=True, help="KFP endpoint, e.g. http://localhost:8080")
    p.add_argument("--experiment", help="KFP experiment (default: mlflow.experiment)")
    p.add_argument("--run-name", help="run name (default: aepipe-<timestamp>)")
    p.add_argument("--namespace", help="Kubeflow profile namespace on multi-user clusters")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser(
        "local", parents=[shared], help="run the whole pipeline here with kfp.local (no cluster, no Docker)"
    )
    p.add_argument("--pipeline-root", help="where task outputs go (default: <repo>/local_outputs)")
    p.set_defaults(fn=cmd_local)

    p = sub.add_parser(
        "pytorchjob",
        parents=[shared],
        help="write a Kubeflow PyTorchJob manifest for multi-node pretraining (kubeflow.pytorchjob)",
    )
    p.add_argument("-o", "--output", default="pytorchjob.yaml", help="output file (default: pytorchjob.yaml)")
    p.set_defaults(fn=cmd_pytorchjob)
