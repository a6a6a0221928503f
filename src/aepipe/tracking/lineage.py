"""One MLflow run per pipeline execution, a nested run per stage.

DVC runs each stage as its own process, so the stages of one execution find their common
parent run by an *execution key*: a hash of the validated params and the git commit. The first
stage to run creates the parent (status RUNNING); later stages attach to the newest RUNNING
parent with the same key; ``register`` finishes it. A failed execution leaves its parent
RUNNING, so the retry continues it instead of scattering runs. Orchestrators that know their
own run (Kubeflow) set ``AEPIPE_EXECUTION_KEY`` to their run id instead.

Runs an interrupted process left RUNNING (SIGKILL, a lost connection) are closed as KILLED when
the execution runs again: the pipeline's stages never run concurrently, so any RUNNING stage run
of the execution at that point is dead. A stage run that raises ends FAILED; the status comes from
the exception type (``END_STATUS``), and a failure to record it never hides the stage's own error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aepipe import signals
from aepipe.config import Params
from aepipe.errors import TrackingError
from aepipe.tracking.tracker import MlflowTracker

if TYPE_CHECKING:
    from mlflow import MlflowClient

KEY_ENV = "AEPIPE_EXECUTION_KEY"
KEY_TAG = "aepipe.execution_key"


ROOT_MARKERS = ("dvc.yaml", ".dvc", ".git", "mlflow.db")


def project_root() -> Path:
    """The repository whose ``mlflow.db`` is the default store.

    ``dvc exp run --queue/--temp`` runs stages in ``<project>/.dvc/tmp/exps/<tmp>`` (DVC_ROOT):
    those runs must land in the project's store, not in a temp copy deleted afterwards. Run from
    a subdirectory, the nearest directory above holding ``dvc.yaml``, ``.dvc``, ``.git`` or an
    ``mlflow.db`` is the root, so ``aepipe promote`` in ``src/`` finds the project's store instead
    of creating an empty one there; with none of them, the working directory.
    """
    root = os.environ.get("DVC_ROOT")
    if not root:
        cwd = Path.cwd()
        return next((d for d in (cwd, *cwd.parents) if any((d / m).exists() for m in ROOT_MARKERS)), cwd)
    parts = Path(root).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path(root)


def local_store() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def require_store() -> None:
    """Commands that only read or move what the pipeline registered never create a store."""
    db = project_root() / "mlflow.db"
    if local_store() and not db.is_file():
        raise TrackingError(
            f"no MLflow store at {db}: run the pipeline first (`dvc repro`), run this command from the "
            "project, or set MLFLOW_TRACKING_URI to the tracking server"
        )


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<project>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _mlflow_env_defaults() -> None:
    """MLflow settings for a command-line tool; each stays the user's to override in the env."""
    # MLflow's defaults retry an unreachable server for minutes; fail within seconds instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow prints "View run ... at URL" on stdout when a run ends; the CLI's stdout is its own
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # ... and a "Downloading artifacts" bar for every few-kB download (even when not at a terminal)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For an HTTP tracking server, fail fast with a clear message when it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc.__class__.__name__}); start it (`make ui`) "
            "or fix MLFLOW_TRACKING_URI (unset it to use the local sqlite:///mlflow.db)."
        ) from None


def client(existing_store: bool = False) -> MlflowClient:
    """An MLflow client on ``tracking_uri()``; ``existing_store`` refuses to create a local store."""
    import mlflow
    from mlflow import MlflowClient

    if existing_store:
        require_store()
    _mlflow_env_defaults()
    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def git_info(cwd: str | None = None) -> dict[str, str]:
    """The commit of the code that runs: the checkout's (``git rev-parse HEAD`` in ``cwd``), else,
    where there is no checkout (the component image, which holds no .git), the commit the image
    was built from (``AEPIPE_GIT_COMMIT``/``AEPIPE_GIT_DIRTY``, baked in by ``make image``)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    if commit:
        dirty = str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()
    else:
        commit = os.environ.get("AEPIPE_GIT_COMMIT", "").strip()
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            return {}
        dirty = "true" if os.environ.get("AEPIPE_GIT_DIRTY", "").strip() == "true" else "false"
    return {
        "mlflow.source.git.commit": commit,
        "aepipe.git_commit": commit,
        "aepipe.git_dirty": dirty,
    }


def execution_key(params: Params, git: dict[str, str]) -> str:
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    text = params.model_dump_json() + git.get("aepipe.git_commit", "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        # the local store keeps artifacts beside it (./mlruns), wherever the stage runs from
        location = (project_root() / "mlruns").as_uri() if local_store() else None
        return mlflow_client.create_experiment(name, artifact_location=location)
    if exp.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def check_artifact_credentials(mlflow_client: MlflowClient, exp_id: str) -> None:
    """An experiment whose artifacts go straight to S3 needs credentials in this process."""
    location = mlflow_client.get_experiment(exp_id).artifact_location or ""
    if not location.startswith("s3://"):
        return
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise TrackingError(
            f"MLflow artifacts of this experiment go to {location} but no S3 credentials were found; export "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and MLFLOW_S3_ENDPOINT_URL for a non-AWS "
            "endpoint), or run the MLflow server with --artifacts-destination so only the server needs them"
        )


def effective_params(params: Params) -> dict[str, Any]:
    """The params that shape this model: the chosen variant's and head's options only.

    Every variant and head keeps its options in params.yaml, but a run of ``vae_joint`` with a
    ``linear`` head is not affected by ``model.mae.*`` or ``classifier.mlp.*``; logging those would
    make MLflow's "Compare" list differences that changed nothing. Cluster settings are dropped too.
    """
    from aepipe.options import HEAD_NAMES, VARIANT_OPTIONS

    variant, head = params.model.name, params.classifier.resolved_head
    out = {}
    for key, value in params.flat().items():
        parts = key.split(".")
        if parts[0] == "kubeflow":
            continue
        if parts[0] == "model" and len(parts) > 2 and parts[1] in VARIANT_OPTIONS and parts[1] != variant:
            continue
        if parts[0] == "classifier" and len(parts) > 2 and parts[1] in HEAD_NAMES and parts[1] != head:
            continue
        out[key] = value
    # the chosen variant's options as the model sees them, defaults included
    options = (params.model.model_extra or {}).get(variant) or {}
    for k, v in VARIANT_OPTIONS[variant].model_validate(options).model_dump(mode="json").items():
        out[f"model.{variant}.{k}"] = v
    return out


def run_title(params: Params, git: dict[str, str]) -> str:
    """A parent run's name in the experiment table: what was trained, on what labels, at what commit."""
    labels = params.classifier.labels_per_class
    commit = git.get("aepipe.git_commit", "")[:7] or "no-git"
    dirty = "+dirty" if git.get("aepipe.git_dirty") == "true" else ""
    return (
        f"{params.model.name}+{params.classifier.resolved_head} "
        f"labels={'all' if labels is None else f'{labels}/class'} @{commit}{dirty}"
    )


def close_stale(
    mlflow_client: MlflowClient, exp_id: str, filter_string: str, keep: str | None, why: str
) -> list[str]:
    """End the RUNNING runs matching ``filter_string`` (but ``keep``) as KILLED; their ids."""
    stale = mlflow_client.search_runs(
        [exp_id], filter_string=f"{filter_string} and attributes.status = 'RUNNING'", max_results=1000
    )
    closed = []
    for run in stale:
        if run.info.run_id == keep:
            continue
        mlflow_client.set_tag(run.info.run_id, "aepipe.closed_because", why)
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def parent_run(mlflow_client: MlflowClient, exp_id: str, params: Params, git: dict[str, str]) -> str:
    key = execution_key(params, git)
    found = mlflow_client.search_runs(
        [exp_id],
        filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
    )
    if found:
        newest: str = found[0].info.run_id
        for older in found[1:]:  # two RUNNING parents of one execution: only the newest goes on
            mlflow_client.set_tag(older.info.run_id, "aepipe.closed_because", f"superseded by {newest}")
            mlflow_client.set_terminated(older.info.run_id, "KILLED")
        return newest
    run = mlflow_client.create_run(
        exp_id, run_name=run_title(params, git), tags={KEY_TAG: key, "aepipe.kind": "pipeline", **git}
    )
    run_id: str = run.info.run_id
    MlflowTracker(mlflow_client, run_id).log_params(effective_params(params))
    return run_id


# The status a stage run ends with when the stage raises, by exception type; the first match wins.
END_STATUS: list[tuple[type[BaseException], str]] = [
    (signals.Terminated, "KILLED"),  # stopped from outside (SIGTERM: preemption, docker stop)
    (KeyboardInterrupt, "KILLED"),
    (BaseException, "FAILED"),
]


def end_status(exc: BaseException) -> str:
    return next(status for kind, status in END_STATUS if isinstance(exc, kind))


@contextlib.contextmanager
def stage_run(stage: str, params: Params, data_hash: str | None = None) -> Iterator[MlflowTracker]:
    """Open one stage's nested MLflow run; it ends FINISHED, or ``end_status`` of the error (KILLED
    when SIGTERM stops it, FAILED when it raises)."""
    try:
        mlflow_client = client()
        exp_id = experiment_id(mlflow_client, params.mlflow.experiment)
        check_artifact_credentials(mlflow_client, exp_id)
        git = git_info()
        parent = parent_run(mlflow_client, exp_id, params, git)
        close_stale(
            mlflow_client,
            exp_id,
            f"tags.`mlflow.parentRunId` = '{parent}'",
            None,
            f"left RUNNING by an interrupted process; closed when the execution ran {stage} again",
        )
        tags = {"mlflow.parentRunId": parent, "aepipe.stage": stage, "aepipe.kind": "stage", **git}
        if data_hash:
            tags["aepipe.data_hash"] = data_hash
        run = mlflow_client.create_run(exp_id, run_name=stage, tags=tags)
    except TrackingError:
        raise
    except Exception as exc:  # MlflowException, requests errors, sqlite errors
        raise TrackingError(f"MLflow at {tracking_uri()} refused to start the {stage} run: {exc}") from exc
    tracker = MlflowTracker(mlflow_client, run.info.run_id)
    tracker.parent_run_id = parent
    tracker.experiment_id = exp_id
    try:
        with signals.sigterm_raises():
            yield tracker
    except BaseException as exc:
        _end_quietly(mlflow_client, run.info.run_id, end_status(exc), exc)
        raise
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


def _end_quietly(mlflow_client: MlflowClient, run_id: str, status: str, error: BaseException) -> None:
    """Record how the run ended without replacing the stage's own error by MLflow's.

    When the tracking server is what failed, ending the run fails too; that second error becomes
    a note after the original message, and the run, left RUNNING, is closed on the next run.
    """
    try:
        mlflow_client.set_terminated(run_id, status)
    except Exception as exc:  # any failure here is secondary to ``error``
        error.add_note(
            f"(MLflow: the stage run {run_id} could not be marked {status}: {exc.__class__.__name__}; "
            "it is closed as KILLED when this execution runs again)"
        )


def finish_parent(tracker: MlflowTracker) -> None:
    """Called by the last stage: the pipeline execution is complete."""
    parent = getattr(tracker, "parent_run_id", None)
    if parent:
        tracker.client.set_terminated(parent, "FINISHED")
