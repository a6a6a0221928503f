"""What the Kubeflow components need besides the stage itself, kept here so their bodies stay thin.

A component body runs from its embedded source inside the image, so anything longer than "parse
params, run the stage, copy scalars" lives in this installed module, where it is tested once and
shared by all six components.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aepipe import __version__
from aepipe.config import Params, parse_params
from aepipe.errors import ConfigError

IMAGE_ENV = "AEPIPE_IMAGE"
PARAMS_SOURCE = "params_json (pipeline parameter)"
# Set by the compiled pipeline on the tasks that request an accelerator (its resource name).
GPU_ENV = "AEPIPE_GPU_REQUESTED"


def default_image(variant: str = "cuda") -> str:
    """The tag `make image` builds (Makefile: IMAGE:TAG = aepipe:<version>-<variant>)."""
    return f"aepipe:{__version__}-{variant}"


def resolve_image(params: Params, override: str | None = None) -> str:
    """--image flag, else env AEPIPE_IMAGE, else kubeflow.image, else the default tag."""
    return override or os.environ.get(IMAGE_ENV) or params.kubeflow.image or default_image()


def params_to_json(params: Params) -> str:
    return json.dumps(params.model_dump(mode="json"), separators=(",", ":"))


def params_from_json(text: str, source: str = PARAMS_SOURCE) -> Params:
    """Validate like params.yaml, so a bad value fails with the same message naming the key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc}); pass the params as one JSON object") from None
    return parse_params(data, source)


def run_stage_json(stage: str, params_json: str, execution_key: str, **paths: str | Path) -> dict[str, Any]:
    """A component's whole job: params from JSON, lineage keyed by the KFP run id, the shared stage."""
    from aepipe.stages.runner import run_stage
    from aepipe.tracking.lineage import KEY_ENV

    params = params_from_json(params_json)
    check_gpu_runtime(params)
    previous = os.environ.get(KEY_ENV)
    if execution_key:
        os.environ[KEY_ENV] = execution_key  # every stage of one KFP run nests under one MLflow parent
    try:
        return run_stage(stage, params, **paths)
    finally:  # a caller in the same process (a test, a notebook) keeps its own lineage
        if previous is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = previous


def check_gpu_runtime(params: Params) -> None:
    """A task given a GPU must see it: fail at once, saying why, instead of training on the CPU.

    ``device: auto`` would otherwise fall back to the CPU without a word when the image's torch is
    a CPU-only build, or when the node's NVIDIA driver is not mounted into the container.
    """
    requested = os.environ.get(GPU_ENV)
    if not requested or params.device == "cpu":
        return
    import torch

    if torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        raise ConfigError(
            f"this task requested a GPU ({requested}) but the image's torch {torch.__version__} is a "
            "CPU-only build without the CUDA runtime; run the CUDA image (`make image`, "
            "aepipe:<version>-cuda) or set kubeflow.accelerator_limit: 0 to train on CPU"
        )
    raise ConfigError(
        f"this task requested a GPU ({requested}) and torch {torch.__version__} has CUDA "
        f"{torch.version.cuda}, but no CUDA device is visible in the container: the node's NVIDIA driver is "
        "not mounted (NVIDIA container runtime / device plugin missing, or the GPU went to another "
        "container); fix the node, or set kubeflow.accelerator_limit: 0 to train on CPU"
    )


def finalize_execution(params_json: str, execution_key: str, state: str, error: str = "") -> dict[str, Any]:
    """The exit task's job: when the pipeline did not succeed, no MLflow run of it stays RUNNING.

    The parent run of this execution (tag ``aepipe.execution_key``) ends FAILED with the error as a
    tag; a stage run still RUNNING (its pod was killed before it could report) ends KILLED. On
    success nothing is touched: ``register`` has finished the parent run.
    """
    from aepipe.tracking.lineage import KEY_TAG, client

    params = params_from_json(params_json)
    if state == "SUCCEEDED":
        return {"state": state, "changed": []}
    mlflow_client = client()
    exp = mlflow_client.get_experiment_by_name(params.mlflow.experiment)
    if exp is None:
        print(f"aepipe finalize: pipeline {state}; no MLflow experiment {params.mlflow.experiment!r} yet")
        return {"state": state, "changed": []}
    parents = mlflow_client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KEY_TAG}` = '{execution_key}' and tags.`aepipe.kind` = 'pipeline'",
        max_results=10,
    )
    changed = []
    for parent in parents:
        children = mlflow_client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = "
            "'RUNNING'",
        )
        for child in children:
            mlflow_client.set_terminated(child.info.run_id, "KILLED")
            changed.append((child.info.run_id, "KILLED"))
        if parent.info.status in ("RUNNING", "SCHEDULED"):
            mlflow_client.set_tag(parent.info.run_id, "aepipe.pipeline_error", (error or state)[:5000])
            mlflow_client.set_terminated(parent.info.run_id, "FAILED")
            changed.append((parent.info.run_id, "FAILED"))
    print(
        f"aepipe finalize: pipeline {state} ({error or 'no message'}); MLflow runs closed: "
        f"{changed or 'none'}"
    )
    return {"state": state, "changed": changed}


def gather(
    dest: str | Path, files: dict[str, str | Path] | None = None, dirs: Iterable[str | Path] = ()
) -> None:
    """Put upstream artifacts side by side, the layout the register stage reads (metrics/, plots/)."""
    import shutil

    dest = Path(dest)
    for name, src in (files or {}).items():
        shutil.copy2(src, dest / name)
    for d in dirs:
        for f in Path(d).iterdir():
            if f.is_file():
                shutil.copy2(f, dest / f.name)


def scalars(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_scalars(artifact: Any, result: dict[str, Any]) -> dict[str, float]:
    """Copy a stage result's numbers onto a KFP Metrics artifact (what the KFP UI shows)."""
    values = scalars(result)
    for key, value in values.items():
        artifact.log_metric(key, value)
    return values


def confusion_matrix(confusion_csv: str | Path, classes: list[str]) -> list[list[int]]:
    """Counts from evaluate's ``confusion.csv`` (one row per test image: actual, predicted)."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    with open(confusion_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            matrix[index[row["actual"]]][index[row["predicted"]]] += 1
    return matrix


def log_confusion(artifact: Any, confusion_csv: str | Path, data_dir: str | Path) -> list[list[int]]:
    classes = [str(c) for c in json.loads((Path(data_dir) / "meta.json").read_text())["classes"]]
    matrix = confusion_matrix(confusion_csv, classes)
    artifact.log_confusion_matrix(classes, matrix)
    return matrix


def write_report(path: str | Path, title: str, metrics: dict[str, Any], images: Iterable[str | Path]) -> None:
    """A self-contained HTML page (PNGs inlined as base64), so the KFP UI shows it without a server."""
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.6g}</td></tr>" for k, v in scalars(metrics).items()
    )
    figures = []
    for image in map(Path, images):
        if image.is_file():
            data = base64.b64encode(image.read_bytes()).decode()
            name = html.escape(image.stem.replace("_", " "))
            figures.append(
                f'<figure><img alt="{name}" '
                f'src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'
            )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td{padding:2px 12px}img{max-width:640px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{rows}</table>{''.join(figures)}</body></html>"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(page)
