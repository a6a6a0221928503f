"""register: log this execution's pair as a candidate with its review pack, then register the
best candidate of the experiment (by the VALIDATION metric) as the new challenger.

``select="current"`` registers this execution's pair whatever its rank; ``run_best`` selects
among existing candidates without logging a new one (``aepipe register --best``).

The register run is what a registered version links to, so it holds what a reviewer compares in
MLflow's UI: the effective params (the chosen variant's and head's options only), the metrics
(validation loss included: it breaks ties), and the review pack under stable names
(``review/confusion.png``, ``review/model_card.md``, ``review/test_predictions.csv``, ...).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aepipe.config import Params
from aepipe.data.prepared import load_prepared
from aepipe.errors import TrackingError
from aepipe.io import read_json, write_csv, write_json
from aepipe.models.io import SPEC
from aepipe.paths import METRIC_FILES
from aepipe.tracking import registry
from aepipe.tracking.review import description, model_card
from aepipe.tracking.tracker import MlflowTracker, NullTracker, Tracker

EVAL, TRAIN, PRETRAIN = (METRIC_FILES[s] for s in ("evaluate", "train", "pretrain"))


def _label_efficiency(client: Any, experiment_id: str, data_hash: str, variant: str) -> list[dict[str, Any]]:
    rows = {}
    for c in registry.candidates(client, experiment_id, data_hash, "val_accuracy"):
        if c.tags.get("aepipe.variant") != variant:
            continue
        labels = int(c.tags.get("aepipe.labels_used", "0") or 0)
        if labels not in rows:  # candidates come best first: keep the best per label budget
            rows[labels] = {
                "labels_used": labels,
                "val_accuracy": c.metrics.get("val_accuracy"),
                "test_accuracy": c.metrics.get("test_accuracy"),
                "run_id": c.run_id,
            }
    return [rows[k] for k in sorted(rows)]


def _review_pack(
    params: Params,
    meta: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    plots_dir: Path | None,
    efficiency: list[dict[str, Any]],
    predictions: list[dict[str, int]],
    dest: Path,
) -> None:
    from aepipe.tracking.lineage import effective_params

    if plots_dir is not None and plots_dir.is_dir():
        for f in sorted(plots_dir.iterdir()):
            if f.suffix in (".png", ".csv"):
                shutil.copy2(f, dest / f.name)
    for name, data in metrics.items():
        (dest / name).write_text(json.dumps(data, indent=2, sort_keys=True))
    write_csv(dest / Path(registry.PREDICTIONS).name, predictions)
    card = model_card(
        summary,
        meta,
        effective_params(params),
        metrics[EVAL],
        metrics.get(TRAIN, {}),
        metrics.get(PRETRAIN, {}),
        efficiency,
    )
    (dest / "model_card.md").write_text(card)


def _predictions(
    params: Params, ds: Any, model_dir: str | Path, classifier_dir: str | Path
) -> tuple[list[dict[str, int]], float]:
    """Per-image test predictions of this pair (what the promotion gate pairs) and its validation
    log-loss (what breaks a tie on the selection metric)."""
    import torch
    from sklearn.metrics import log_loss

    from aepipe.models.io import load_pair
    from aepipe.training.device import resolve_device

    device = resolve_device(params.device)
    pair, _ = load_pair(model_dir, classifier_dir, device)
    bs = params.evaluate.batch_size
    with torch.inference_mode():
        x_val, y_val = ds.split("val")
        val_loss = float(log_loss(y_val, pair.predict_proba(x_val, bs), labels=list(range(len(ds.classes)))))
        x_test, y_test = ds.split("test")
        pred = pair.predict_proba(x_test, bs).argmax(1)
    rows = [
        {"index": i, "label": int(a), "prediction": int(p)}
        for i, (a, p) in enumerate(zip(y_test, pred, strict=True))
    ]
    return rows, val_loss


def run(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    classifier_dir: str | Path,
    metrics_dir: str | Path,
    out_path: str | Path,
    plots_dir: str | Path | None = None,
    select: str = "best",
    tracker: Tracker = NullTracker(),
) -> dict[str, Any]:
    """``tracker``: the stage's MLflow run, which becomes the candidate (its client also writes
    the registry); a tracker that records nowhere cannot register, and is refused first."""
    from aepipe.models import REGISTRY
    from aepipe.tracking.lineage import effective_params

    if not isinstance(tracker, MlflowTracker):
        raise TrackingError(
            "register logs the pair to MLflow and registers it, so it needs an MLflow run; "
            f"got {type(tracker).__name__}: run it through aepipe.stages.runner.run_stage (`aepipe register`)"
        )
    client, run_id = tracker.client, tracker.run_id
    cfg = params.mlflow
    ds = load_prepared(data_dir, mmap=True)
    metrics = {
        name: read_json(Path(metrics_dir) / name, f"{name} metrics")
        for name in METRIC_FILES.values()
        if (Path(metrics_dir) / name).is_file()
    }
    if EVAL not in metrics:
        raise TrackingError(
            f"{Path(metrics_dir) / EVAL}: evaluation metrics not found; run `aepipe evaluate` first"
        )
    evaluation = metrics[EVAL]
    head = read_json(Path(classifier_dir) / SPEC, "classifier spec")
    run = client.get_run(run_id)
    uses_labels = bool(getattr(REGISTRY[params.model.name].module, "uses_labels", False))
    summary = {
        "name": cfg.model_name,
        "variant": params.model.name,
        "head": head["head"],
        "dataset": ds.meta["source"],
        "data_hash": ds.meta["data_hash"],
        "labels_used": int(head.get("labels_used", 0)),
        "pretrain_uses_labels": uses_labels,
    }
    tags = {
        "aepipe.data_hash": ds.meta["data_hash"],
        "aepipe.dataset": ds.meta["source"],
        "aepipe.variant": params.model.name,
        "aepipe.head": head["head"],
        "aepipe.labels_used": str(summary["labels_used"]),
        "aepipe.pretrain_uses_labels": str(uses_labels).lower(),
        **{
            k: v
            for k, v in run.data.tags.items()
            if k in ("aepipe.git_commit", "aepipe.git_dirty", "mlflow.source.git.commit")
        },
    }
    labels = params.classifier.labels_per_class
    client.update_run(  # readable in "Compare": what this candidate is
        run_id,
        name=f"register {params.model.name}+{head['head']} labels={'all' if labels is None else labels}",
    )
    predictions, val_loss = _predictions(params, ds, model_dir, classifier_dir)
    # params and metrics go on the run BEFORE the models are logged: MLflow 3 copies them onto
    # the LoggedModels, and the registered version's source run shows them in "Compare".
    tracker.log_params(effective_params(params))
    numbers = {k: v for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tracker.log_metrics({**numbers, registry.TIE_BREAK: val_loss})
    efficiency = _label_efficiency(client, run.info.experiment_id, ds.meta["data_hash"], params.model.name)
    x_test, _ = ds.split("test")
    feature_dim = int(head["in_dim"])
    with tempfile.TemporaryDirectory() as review:
        _review_pack(
            params,
            ds.meta,
            metrics,
            summary,
            Path(plots_dir) if plots_dir else None,
            efficiency,
            predictions,
            Path(review),
        )
        registry.log_candidate(
            client, run_id, model_dir, classifier_dir, x_test[:2].copy(), feature_dim, tags, review
        )

    pool = registry.candidates(
        client, run.info.experiment_id, ds.meta["data_hash"], cfg.selection_metric, include_run=run_id
    )
    if select == "current":
        pool = [c for c in pool if c.run_id == run_id]
    return _register_best(client, pool, params, out_path, this_run=run_id, extra={"val_loss": val_loss})


def run_best(params: Params, data_hash: str, out_path: str | Path) -> dict[str, Any]:
    """Select among the experiment's existing candidates only (no new candidate)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(params.mlflow.experiment)
    if exp is None:
        raise TrackingError(
            f"MLflow experiment {params.mlflow.experiment!r} does not exist; run the pipeline first"
        )
    pool = registry.candidates(client, exp.experiment_id, data_hash, params.mlflow.selection_metric)
    return _register_best(client, pool, params, out_path, this_run=None)


def _outcome(reg: registry.Registered, best: registry.Candidate, this: registry.Candidate | None) -> str:
    """One sentence on what happened to the registry, for the record and for `aepipe promote`."""
    if reg.status == "created":
        return f"registered version {reg.version} with alias {reg.alias} ({reg.reason})"
    if reg.status == "completed":
        return f"finished the interrupted registration of version {reg.version} ({'; '.join(reg.steps)})"
    if this is not None and this.pair_hash == best.pair_hash:
        return f"this run's pair is already version {reg.version}; aliases left as they were"
    mine = f" (this run: {this.metric:.4f})" if this is not None else ""
    return f"kept version {reg.version}, the best candidate: {reg.reason}{mine}; aliases left as they were"


def _register_best(
    client: Any,
    pool: list[registry.Candidate],
    params: Params,
    out_path: str | Path,
    this_run: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = params.mlflow
    if not pool:
        raise TrackingError(
            f"no finished candidate with metric {cfg.selection_metric!r} in experiment {cfg.experiment!r} "
            "for this data; run the pipeline (dvc repro) first"
        )
    best = pool[0]
    this = next((c for c in pool if c.run_id == this_run), None)
    reason = registry.selection_note(pool, cfg.selection_metric, this_run)
    champ = registry.champion(client, cfg.model_name, cfg.promotion_metric)
    text = description(
        {
            "variant": best.tags.get("aepipe.variant", "?"),
            "head": best.tags.get("aepipe.head", "?"),
            "dataset": best.tags.get("aepipe.dataset", "?"),
            "data_hash": best.tags.get("aepipe.data_hash", ""),
            "labels_used": best.tags.get("aepipe.labels_used", "?"),
            "pretrain_uses_labels": best.tags.get("aepipe.pretrain_uses_labels") == "true",
        },
        {
            k: best.metrics.get(k, float("nan"))
            for k in ("test_accuracy", "test_macro_f1", "val_accuracy", "test_recon_mse")
        }
        | {cfg.promotion_metric: best.metrics.get(cfg.promotion_metric, float("nan"))},
        champ,
        cfg.promotion_metric,
        selection=reason,
    )
    reg = registry.register(client, best, cfg.model_name, cfg.alias, text, reason)
    outcome = _outcome(reg, best, this)
    result = {
        "model_name": reg.name,
        "version": reg.version,
        "alias": reg.alias,
        "created": reg.created,
        "status": reg.status,
        "outcome": outcome,
        "selection": reason,
        "selected_run_id": best.run_id,
        "this_run_id": this_run,
        "this_run_selected": best.run_id == this_run,
        "selection_metric": cfg.selection_metric,
        "selected_metric": best.metric,
        "candidates": len(pool),
        "encoder_version": reg.encoder_version,
        "model_uri": f"models:/{reg.name}/{reg.version}",
        **(extra or {}),
    }
    registry.record_last_registration(
        client,
        cfg.model_name,
        {k: result[k] for k in ("version", "status", "outcome", "this_run_id", "selected_run_id")},
    )
    write_json(out_path, result)
    return result
