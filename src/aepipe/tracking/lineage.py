"""One MLflow run per pipeline execution, a nested run per stage.

DVC runs each stage as its own process, so the stages of one execution find their common
parent run by an *execution key*: a hash of the validated params and the git commit. The first
stage to run creates the parent (status RUNNING); later stages attach to the newest RUNNING
parent with the same key; ``register`` finishes it. A failed execution leaves its parent
RUNNING, so the retry continues it instead of scattering runs. Orchestrators that know their
own run (Kubeflow) set ``AEPIPE_EXECUTION_KEY`` to their run id instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aepipe import signals
from aepipe.config import Params
from aepipe.errors import TrackingError
from aepipe.tracking.tracker import MlflowTracker

KEY_ENV = "AEPIPE_EXECUTION_KEY"
KEY_TAG = "aepipe.execution_key"


def project_root() -> Path:
    """The repository whose ``mlflow.db`` is the default store.

    ``dvc exp run --queue/--temp`` runs stages in ``<project>/.dvc/tmp/exps/<tmp>`` (DVC_ROOT):
    those runs must land in the project's store, not in a temp copy deleted afterwards.
    """
    root = os.environ.get("DVC_ROOT")
    if not root:
        return Path.cwd()
    parts = Path(root).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path(root)


def local_store() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<project>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _limit_http_retries() -> None:
    # MLflow's defaults retry an unreachable server for minutes; fail within seconds instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For an HTTP tracking server, fail fast with a clear message when it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc.__class__.__name__}); start it (`make ui`) or fix "
            "MLFLOW_TRACKING_URI (unset it to use the local sqlite:///mlflow.db). Local outputs were left as they were."
        ) from None


def client() -> Any:
    import mlflow
    from mlflow import MlflowClient

    _limit_http_retries()
    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def git_info(cwd: str | None = None) -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "mlflow.source.git.commit": commit,
        "aepipe.git_commit": commit,
        "aepipe.git_dirty": str(bool(dirty)).lower(),
    }


def execution_key(params: Params, git: dict[str, str]) -> str:
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    text = params.model_dump_json() + git.get("aepipe.git_commit", "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_id(mlflow_client: Any, name: str) -> str:
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        # the local store keeps artifacts beside it (./mlruns), wherever the stage runs from
        location = (project_root() / "mlruns").as_uri() if local_store() else None
        return mlflow_client.create_experiment(name, artifact_location=location)
    if exp.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def check_artifact_credentials(mlflow_client: Any, exp_id: str) -> None:
    """An experiment whose artifacts go straight to S3 needs credentials in this process."""
    location = mlflow_client.get_experiment(exp_id).artifact_location or ""
    if not location.startswith("s3://"):
        return
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise TrackingError(
            f"MLflow artifacts of this experiment go to {location} but no S3 credentials were found; "
            "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and MLFLOW_S3_ENDPOINT_URL for a non-AWS endpoint), "
            "or run the MLflow server with --artifacts-destination so only the server needs them"
        )


def parent_run(mlflow_client: Any, exp_id: str, params: Params, git: dict[str, str]) -> str:
    key = execution_key(params, git)
    found = mlflow_client.search_runs(
        [exp_id],
        filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = mlflow_client.create_run(
        exp_id, run_name=f"pipeline-{key[:8]}", tags={KEY_TAG: key, "aepipe.kind": "pipeline", **git}
    )
    MlflowTracker(mlflow_client, run.info.run_id).log_params(params.flat())
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params: Params, data_hash: str | None = None) -> Iterator[MlflowTracker]:
    """Open one stage's nested MLflow run; FAILED if the stage raises, KILLED if SIGTERM stops it."""
    try:
        mlflow_client = client()
        exp_id = experiment_id(mlflow_client, params.mlflow.experiment)
        check_artifact_credentials(mlflow_client, exp_id)
        git = git_info()
        parent = parent_run(mlflow_client, exp_id, params, git)
        tags = {"mlflow.parentRunId": parent, "aepipe.stage": stage, "aepipe.kind": "stage", **git}
        if data_hash:
            tags["aepipe.data_hash"] = data_hash
        run = mlflow_client.create_run(exp_id, run_name=stage, tags=tags)
    except TrackingError:
        raise
    except Exception as exc:  # MlflowException, requests errors, sqlite errors
        raise TrackingError(f"MLflow at {tracking_uri()} refused to start the {stage} run: {exc}") from exc
    tracker = MlflowTracker(mlflow_client, run.info.run_id)
    tracker.parent_run_id = parent  # type: ignore[attr-defined]
    try:
        with signals.sigterm_raises():
            yield tracker
    except signals.Terminated:  # stopped from outside (SIGTERM: preemption, docker stop): not a failure
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
        raise
    except BaseException:
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


def finish_parent(tracker: MlflowTracker) -> None:
    """Called by the last stage: the pipeline execution is complete."""
    parent = getattr(tracker, "parent_run_id", None)
    if parent:
        tracker.client.set_terminated(parent, "FINISHED")
