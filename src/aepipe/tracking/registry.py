"""Candidates, best-pair selection and registration.

Every ``register`` run logs its encoder+classifier pair as a *candidate* (an MLflow LoggedModel on
that run, with the review pack). Selection then picks, among the finished candidates of the
experiment on the same data, the one with the best VALIDATION metric and registers only that
one — once: a pair already registered (same weights) never gets a second version.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

import aepipe
from aepipe.errors import TrackingError
from aepipe.io import sha256_file
from aepipe.tracking.review import Champion

HERE = Path(__file__).parent
PAIR_CODE = HERE / "pyfunc_model.py"
ENCODER_CODE = HERE / "pyfunc_encoder.py"
CANDIDATE_TAG = "aepipe.candidate_model_id"
ENCODER_TAG = "aepipe.encoder_model_id"
PAIR_HASH_TAG = "aepipe.pair_hash"


def pip_requirements() -> list[str]:
    # Given explicitly: MLflow's inference of requirements costs ~11 s per log_model call.
    return [
        f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "numpy", "pandas", "pydantic", "scikit-learn")
    ]


def pair_signature(input_shape: tuple[int, ...]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *input_shape))])
    outputs = Schema(
        [
            ColSpec(DataType.string, "class"),
            ColSpec(DataType.long, "class_index"),
            ColSpec(Array(DataType.double), "probabilities"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def encoder_signature(input_shape: tuple[int, ...], feature_dim: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, feature_dim))]),
    )


def pair_hash(*directories: str | Path) -> str:
    h = hashlib.sha256()
    for d in directories:
        for f in sorted(Path(d).rglob("*")):
            if f.is_file():
                h.update(f.relative_to(d).as_posix().encode())
                h.update(sha256_file(f).encode())
    return h.hexdigest()


def _log_pyfunc(
    name: str,
    code: Path,
    artifacts: dict[str, str],
    signature: Any,
    example: np.ndarray,
    tags: dict[str, str],
) -> str:
    import mlflow

    with warnings.catch_warnings():
        # predict() has no type hints on purpose: the signature is the contract.
        warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            code_paths=[str(Path(aepipe.__file__).parent)],
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            tags=tags,
        )
    return info.model_id


def log_candidate(
    run_id: str,
    autoencoder_dir: str | Path,
    classifier_dir: str | Path,
    example: np.ndarray,
    feature_dim: int,
    tags: dict[str, str],
    review_dir: str | Path | None,
) -> dict[str, str]:
    """Log pair + encoder as LoggedModels on ``run_id`` and tag the run as a candidate."""
    import mlflow
    from mlflow import MlflowClient

    shape = tuple(example.shape[1:])
    with tempfile.TemporaryDirectory() as staging, mlflow.start_run(run_id=run_id):
        # MLflow stores an artifact under its directory's basename: stage copies under fixed names
        ae, clf = Path(staging) / "autoencoder", Path(staging) / "classifier"
        shutil.copytree(autoencoder_dir, ae)
        shutil.copytree(classifier_dir, clf)
        pair_id = _log_pyfunc(
            "model",
            PAIR_CODE,
            {"autoencoder": str(ae), "classifier": str(clf)},
            pair_signature(shape),
            example,
            tags,
        )
        encoder_id = _log_pyfunc(
            "encoder",
            ENCODER_CODE,
            {"autoencoder": str(ae)},
            encoder_signature(shape, feature_dim),
            example,
            tags,
        )
        if review_dir is not None:
            mlflow.log_artifacts(str(review_dir), "review")
    hashes = {
        PAIR_HASH_TAG: pair_hash(autoencoder_dir, classifier_dir),
        CANDIDATE_TAG: pair_id,
        ENCODER_TAG: encoder_id,
    }
    client = MlflowClient()
    for key, value in {**tags, **hashes}.items():
        client.set_tag(run_id, key, value)
    return hashes


@dataclass
class Candidate:
    run_id: str
    model_id: str
    encoder_model_id: str
    pair_hash: str
    metric: float
    tags: dict[str, str]
    metrics: dict[str, float]


def candidates(
    client: Any, experiment_id: str, data_hash: str, metric: str, include_run: str | None = None
) -> list[Candidate]:
    """Finished candidates on ``data_hash`` (plus ``include_run``, the one registering now), best first."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`aepipe.data_hash` = '{data_hash}' and tags.`{CANDIDATE_TAG}` != ''",
        max_results=5000,
    )
    found = []
    for run in runs:
        finished = run.info.status == "FINISHED" or run.info.run_id == include_run
        if not finished or metric not in run.data.metrics:
            continue
        t = run.data.tags
        found.append(
            Candidate(
                run.info.run_id,
                t[CANDIDATE_TAG],
                t.get(ENCODER_TAG, ""),
                t.get(PAIR_HASH_TAG, ""),
                run.data.metrics[metric],
                t,
                run.data.metrics,
            )
        )
    # best validation metric first; ties go to the earlier run, so re-runs never displace it
    order = {r.info.run_id: r.info.start_time for r in runs}
    return sorted(found, key=lambda c: (-c.metric, order[c.run_id]))


def find_version(client: Any, name: str, pair: str) -> Any | None:
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception:  # registered model does not exist yet
        return None
    same = [v for v in versions if v.tags.get(PAIR_HASH_TAG) == pair]
    return min(same, key=lambda v: int(v.version)) if same else None


def champion(client: Any, name: str, metric: str, alias: str = "champion") -> Champion | None:
    try:
        v = client.get_model_version_by_alias(name, alias)
    except Exception:
        return None
    value = v.tags.get(f"aepipe.{metric}")
    return Champion(
        str(v.version), float(value) if value not in (None, "") else None, v.tags.get("aepipe.data_hash")
    )


@dataclass
class Registered:
    name: str
    version: str
    alias: str
    created: bool
    run_id: str
    encoder_version: str | None


def register(client: Any, cand: Candidate, name: str, alias: str, description: str) -> Registered:
    """Register the candidate (pair + encoder) unless that pair already has a version; set the alias."""
    import mlflow

    tags = {
        k: v
        for k, v in cand.tags.items()
        if k.startswith("aepipe.") and k not in (CANDIDATE_TAG, ENCODER_TAG, "aepipe.stage", "aepipe.kind")
    }
    tags |= {
        f"aepipe.{k}": f"{v:.6f}"
        for k, v in cand.metrics.items()
        if k in ("test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1", "test_recon_mse")
    }
    tags |= {"aepipe.source_run_id": cand.run_id}
    existing = find_version(client, name, cand.pair_hash)
    if existing is not None:
        ver, created = str(existing.version), False
    else:
        try:
            mv = mlflow.register_model(f"models:/{cand.model_id}", name, tags=tags)
        except Exception as exc:
            raise TrackingError(f"registering {cand.model_id} as {name!r} failed: {exc}") from exc
        ver, created = str(mv.version), True
        client.update_model_version(name, ver, description=description)
    encoder_version = None
    if cand.encoder_model_id:
        enc = find_version(client, f"{name}-encoder", cand.pair_hash)
        if enc is None:
            enc = mlflow.register_model(
                f"models:/{cand.encoder_model_id}",
                f"{name}-encoder",
                tags={**tags, "aepipe.pair_version": ver},
            )
        encoder_version = str(enc.version)
    if created:
        client.set_registered_model_alias(name, alias, ver)
        if encoder_version:
            client.set_registered_model_alias(f"{name}-encoder", alias, encoder_version)
    return Registered(name, ver, alias, created, cand.run_id, encoder_version)
