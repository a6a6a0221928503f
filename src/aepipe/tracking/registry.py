"""Candidates, best-pair selection and registration.

Every ``register`` run logs its encoder+classifier pair as a *candidate* (an MLflow LoggedModel on
that run, with the review pack). Selection then picks, among the finished candidates of the
experiment on the same data, the one with the best VALIDATION metric (ties: the lower validation
loss, then the earlier run) and registers only that one — once: a pair already registered (same
weights) never gets a second version.

Registration is a sequence of registry calls that a crash or a lost connection can cut anywhere.
The version is created with the pair's hash as a tag and ``aepipe.registration = pending``; the
description, tags, encoder version and aliases follow, and ``complete`` is set last. A re-run
finds the version by the hash and finishes whatever a pending one lacks.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
STATE_TAG = "aepipe.registration"  # pending -> complete
ENCODER_VERSION_TAG = "aepipe.encoder_version"
PAIR_VERSION_TAG = "aepipe.pair_version"
LAST_REGISTRATION_TAG = "aepipe.last_registration"  # on the registered model: what the last run did
PREDICTIONS = "review/test_predictions.csv"  # per-image test predictions the promotion gate pairs
TIE_BREAK = "val_loss"
ROOT_REVIEW = ("confusion.png", "misclassified.png", "model_card.md")
VERSION_METRICS = (
    "test_accuracy",
    "test_macro_f1",
    "val_accuracy",
    "val_macro_f1",
    "val_loss",
    "test_recon_mse",
)


def encoder_name(name: str) -> str:
    return f"{name}-encoder"


def not_found(exc: BaseException) -> bool:
    """MLflow's "this does not exist" (a missing registered model or version), nothing else."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def registry_error(what: str, exc: BaseException) -> TrackingError:
    from aepipe.tracking.lineage import tracking_uri

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return TrackingError(f"MLflow registry at {tracking_uri()} failed while {what}: {reason[:300]}")


def aliases(client: Any, name: str) -> dict[str, str] | None:
    """All aliases of ``name`` in one read ({} when none); None when the model does not exist.

    Reading the registered model (instead of asking for one alias) makes "no such alias" a plain
    dictionary miss: any error here is a real failure (server down, 503, permission) and aborts.
    """
    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        if not_found(exc):
            return None
        raise registry_error(f"reading registered model {name!r}", exc) from None
    return {k: str(v) for k, v in (model.aliases or {}).items()}


def model_tags(client: Any, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).tags or {})
    except Exception as exc:
        if not_found(exc):
            return {}
        raise registry_error(f"reading registered model {name!r}", exc) from None


def get_version(client: Any, name: str, ver: str) -> Any | None:
    try:
        return client.get_model_version(name, str(ver))
    except Exception as exc:
        if not_found(exc):
            return None
        raise registry_error(f"reading {name} version {ver}", exc) from None


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
    run_id: str,
    name: str,
    code: Path,
    artifacts: dict[str, str],
    signature: Any,
    example: np.ndarray,
    tags: dict[str, str],
) -> str:
    """A models-from-code LoggedModel on ``run_id``, without making it the active run.

    ``mlflow.start_run(run_id=...)`` would end the stage run FINISHED when its block exits, before
    the registration that follows has happened; ``Model.log(run_id=...)`` leaves its status to the
    stage. The LoggedModel takes the run's params and the metrics logged so far (MLflow 3 copies
    the metrics; the params are given here), so the model page shows them too.

    The LoggedModel is created first, in the run's experiment: left to ``Model.log``, MLflow
    3.17 puts it in the current fluent experiment (Default, with no active run), and then
    ``runs:/<run>/model`` finds no model, since it looks in the run's experiment.
    """
    import mlflow
    from mlflow.models import Model

    run = mlflow.MlflowClient().get_run(run_id)
    model = mlflow.initialize_logged_model(
        name=name,
        source_run_id=run_id,
        tags=tags,
        params={k: str(v) for k, v in run.data.params.items()},
        experiment_id=run.info.experiment_id,
    )
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=mlflow.pyfunc,
        flavor_name="pyfunc.ModelFromCode",
        run_id=run_id,
        model_id=model.model_id,
        python_model=str(code),
        code_paths=[str(Path(aepipe.__file__).parent)],
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
    )
    model_id: str = info.model_id
    return model_id


def log_candidate(
    client: Any,
    run_id: str,
    autoencoder_dir: str | Path,
    classifier_dir: str | Path,
    example: np.ndarray,
    feature_dim: int,
    tags: dict[str, str],
    review_dir: str | Path | None,
) -> dict[str, str]:
    """Log pair + encoder as LoggedModels on ``run_id`` and tag the run as a candidate."""
    shape = tuple(example.shape[1:])
    with tempfile.TemporaryDirectory() as staging:
        # MLflow stores an artifact under its directory's basename: stage copies under fixed names
        ae, clf = Path(staging) / "autoencoder", Path(staging) / "classifier"
        shutil.copytree(autoencoder_dir, ae)
        shutil.copytree(classifier_dir, clf)
        pair_id = _log_pyfunc(
            run_id,
            "model",
            PAIR_CODE,
            {"autoencoder": str(ae), "classifier": str(clf)},
            pair_signature(shape),
            example,
            tags,
        )
        encoder_id = _log_pyfunc(
            run_id,
            "encoder",
            ENCODER_CODE,
            {"autoencoder": str(ae)},
            encoder_signature(shape, feature_dim),
            example,
            tags,
        )
    if review_dir is not None:
        client.log_artifacts(run_id, str(review_dir), "review")
        # MLflow's "Compare" (runs) previews only files at the artifact root: put the ones a
        # reviewer compares side by side there too, under the same names in every run
        for name in ROOT_REVIEW:
            if (Path(review_dir) / name).is_file():
                client.log_artifact(run_id, str(Path(review_dir) / name))
    hashes = {
        PAIR_HASH_TAG: pair_hash(autoencoder_dir, classifier_dir),
        CANDIDATE_TAG: pair_id,
        ENCODER_TAG: encoder_id,
    }
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
    start_time: int = 0

    @property
    def tie_break(self) -> float:
        value = self.metrics.get(TIE_BREAK)
        return float(value) if value is not None and math.isfinite(value) else math.inf


def candidates(
    client: Any, experiment_id: str, data_hash: str, metric: str, include_run: str | None = None
) -> list[Candidate]:
    """Finished candidates on ``data_hash`` (plus ``include_run``, the one registering now), best first.

    Order: the higher validation ``metric``; on a tie the lower validation loss; then the earlier
    run (so re-running the same pair never displaces the version it already has).
    """
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
                run.info.start_time or 0,
            )
        )
    return sorted(found, key=lambda c: (-c.metric, c.tie_break, c.start_time))


def selection_note(pool: list[Candidate], metric: str, this_run: str | None) -> str:
    """Why ``pool[0]`` was chosen, in words (ties named)."""
    best = pool[0]
    tied = [c for c in pool if c.metric == best.metric]
    if len(tied) == 1:
        runner_up = f"; next best {pool[1].metric:.4f}" if len(pool) > 1 else ""
        return f"best {metric} {best.metric:.4f} of {len(pool)} candidate(s){runner_up}"
    other = next((c for c in tied[1:]), None)
    if other is not None and best.tie_break != other.tie_break:
        rule = f"the lower validation loss ({best.tie_break:.5f} vs {other.tie_break:.5f})"
    else:
        rule = "the earlier run (equal validation loss, or none recorded)"
    return f"{len(tied)} candidates tie on {metric} {best.metric:.4f}; the tie goes to {rule}"


def find_version(client: Any, name: str, pair: str) -> Any | None:
    """The (lowest) version of ``name`` holding the pair with hash ``pair``; None if there is none."""
    try:
        versions = client.search_model_versions(f"name='{name}' and tags.`{PAIR_HASH_TAG}` = '{pair}'")
    except Exception as exc:
        if not_found(exc):
            return None
        raise registry_error(f"looking up the versions of {name!r}", exc) from None
    same = [v for v in versions if v.tags.get(PAIR_HASH_TAG) == pair]
    return min(same, key=lambda v: int(v.version)) if same else None


def champion(client: Any, name: str, metric: str, alias: str = "champion") -> Champion | None:
    held = aliases(client, name)
    if not held or alias not in held:
        return None
    v = get_version(client, name, held[alias])
    if v is None:
        return None
    value = v.tags.get(f"aepipe.{metric}")
    return Champion(
        str(v.version), float(value) if value not in (None, "") else None, v.tags.get("aepipe.data_hash")
    )


@dataclass
class Registered:
    name: str
    version: str
    alias: str | None
    status: str  # created | completed (an interrupted registration finished) | kept
    run_id: str
    encoder_version: str | None
    reason: str = ""
    steps: list[str] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return self.status == "created"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version_tags(cand: Candidate) -> dict[str, str]:
    tags = {
        k: v
        for k, v in cand.tags.items()
        if k.startswith("aepipe.")
        and k not in (CANDIDATE_TAG, ENCODER_TAG, "aepipe.stage", "aepipe.kind", "aepipe.closed_because")
    }
    tags |= {f"aepipe.{k}": f"{v:.6f}" for k, v in cand.metrics.items() if k in VERSION_METRICS}
    tags |= {"aepipe.source_run_id": cand.run_id, PAIR_HASH_TAG: cand.pair_hash}
    return tags


def _create(client: Any, model_id: str, name: str, tags: dict[str, str]) -> str:
    import mlflow

    try:
        mv = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    except Exception as exc:
        raise registry_error(f"registering {model_id} as a version of {name!r}", exc) from None
    return str(mv.version)


def register(
    client: Any, cand: Candidate, name: str, alias: str, description: str, reason: str
) -> Registered:
    """Register the candidate (pair + encoder) unless that pair already has a complete version.

    Each step is idempotent and ``complete`` is tagged last, so a re-run after a crash at any point
    finishes the same version instead of creating another or leaving it half-registered.
    """
    tags = _version_tags(cand)
    existing = find_version(client, name, cand.pair_hash)
    if existing is not None and existing.tags.get(STATE_TAG, "complete") == "complete":
        # (versions registered before the state tag existed were complete by construction)
        return Registered(
            name, str(existing.version), None, "kept", cand.run_id, _encoder_of(existing), reason
        )
    steps = []
    if existing is None:
        ver = _create(client, cand.model_id, name, {**tags, STATE_TAG: "pending"})
        status = "created"
        steps.append(f"created version {ver}")
    else:
        ver, status = str(existing.version), "completed"
        steps.append(f"found version {ver} left pending by an interrupted registration")
    try:
        client.update_model_version(name, ver, description=description)
        for key, value in tags.items():
            client.set_model_version_tag(name, ver, key, value)
        encoder_version = None
        if cand.encoder_model_id:
            enc = find_version(client, encoder_name(name), cand.pair_hash)
            if enc is None:
                encoder_version = _create(
                    client, cand.encoder_model_id, encoder_name(name), {**tags, PAIR_VERSION_TAG: ver}
                )
            else:
                encoder_version = str(enc.version)
                client.set_model_version_tag(encoder_name(name), encoder_version, PAIR_VERSION_TAG, ver)
            client.set_model_version_tag(name, ver, ENCODER_VERSION_TAG, encoder_version)
            steps.append(f"encoder {encoder_name(name)} version {encoder_version}")
        held = aliases(client, name) or {}
        given = None
        if held.get("champion") != ver:  # a champion is not a challenger to itself
            if encoder_version:
                client.set_registered_model_alias(encoder_name(name), alias, encoder_version)
            client.set_registered_model_alias(name, alias, ver)
            given = alias
            steps.append(f"alias {alias} -> {ver}")
        client.set_model_version_tag(name, ver, STATE_TAG, "complete")
    except TrackingError:
        raise
    except Exception as exc:
        raise registry_error(
            f"finishing the registration of {name} version {ver} (done: {'; '.join(steps)}); "
            "run `aepipe register` again to finish it",
            exc,
        ) from None
    return Registered(name, ver, given, status, cand.run_id, encoder_version, reason, steps)


def _encoder_of(version: Any) -> str | None:
    return version.tags.get(ENCODER_VERSION_TAG) or None


def record_last_registration(client: Any, name: str, record: dict[str, Any]) -> None:
    """What the last registration did, on the registered model: ``aepipe promote`` explains it."""
    try:
        client.set_registered_model_tag(name, LAST_REGISTRATION_TAG, json.dumps({"at": _now(), **record}))
    except Exception as exc:
        raise registry_error(f"recording the registration on {name!r}", exc) from None


def last_registration(client: Any, name: str) -> dict[str, Any] | None:
    text = model_tags(client, name).get(LAST_REGISTRATION_TAG)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
