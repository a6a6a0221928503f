"""register: log this execution's pair as a candidate with its review pack, then register the
best candidate of the experiment (by the VALIDATION metric) as the new challenger.

``select="current"`` registers this execution's pair whatever its rank; ``run_best`` selects
among existing candidates without logging a new one (``aepipe register --best``).
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
from aepipe.io import read_json, write_json
from aepipe.models.io import SPEC
from aepipe.tracking import registry
from aepipe.tracking.review import description, model_card

METRIC_FILES = ("pretrain.json", "train.json", "eval.json")


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
    meta: dict,
    metrics: dict[str, dict],
    head: dict,
    summary: dict,
    plots_dir: Path | None,
    efficiency: list,
    dest: Path,
) -> None:
    if plots_dir is not None and plots_dir.is_dir():
        for f in sorted(plots_dir.iterdir()):
            if f.suffix in (".png", ".csv"):
                shutil.copy2(f, dest / f.name)
    for name, data in metrics.items():
        (dest / name).write_text(json.dumps(data, indent=2, sort_keys=True))
    card = model_card(
        summary,
        meta,
        params.flat(),
        metrics["eval.json"],
        metrics.get("train.json", {}),
        metrics.get("pretrain.json", {}),
        efficiency,
    )
    (dest / "model_card.md").write_text(card)


def run(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    classifier_dir: str | Path,
    metrics_dir: str | Path,
    out_path: str | Path,
    run_id: str,
    plots_dir: str | Path | None = None,
    select: str = "best",
) -> dict[str, Any]:
    from mlflow import MlflowClient

    cfg = params.mlflow
    ds = load_prepared(data_dir, mmap=True)
    metrics = {
        name: read_json(Path(metrics_dir) / name, f"{name} metrics")
        for name in METRIC_FILES
        if (Path(metrics_dir) / name).is_file()
    }
    if "eval.json" not in metrics:
        raise TrackingError(
            f"{Path(metrics_dir) / 'eval.json'}: evaluation metrics not found; run `aepipe evaluate` first"
        )
    evaluation = metrics["eval.json"]
    head = read_json(Path(classifier_dir) / SPEC, "classifier spec")
    client = MlflowClient()
    run = client.get_run(run_id)
    summary = {
        "name": cfg.model_name,
        "variant": params.model.name,
        "head": head["head"],
        "dataset": ds.meta["source"],
        "data_hash": ds.meta["data_hash"],
        "labels_used": int(head.get("labels_used", 0)),
    }
    tags = {
        "aepipe.data_hash": ds.meta["data_hash"],
        "aepipe.dataset": ds.meta["source"],
        "aepipe.variant": params.model.name,
        "aepipe.head": head["head"],
        "aepipe.labels_used": str(summary["labels_used"]),
        **{
            k: v
            for k, v in run.data.tags.items()
            if k in ("aepipe.git_commit", "aepipe.git_dirty", "mlflow.source.git.commit")
        },
    }
    client.log_batch(
        run_id,
        metrics=[_metric(k, v) for k, v in evaluation.items() if isinstance(v, (int, float))],
        synchronous=True,
    )
    efficiency = _label_efficiency(client, run.info.experiment_id, ds.meta["data_hash"], params.model.name)
    x_test, _ = ds.split("test")
    feature_dim = int(head["in_dim"])
    with tempfile.TemporaryDirectory() as review:
        _review_pack(
            params,
            ds.meta,
            metrics,
            head,
            summary,
            Path(plots_dir) if plots_dir else None,
            efficiency,
            Path(review),
        )
        logged = registry.log_candidate(
            run_id, model_dir, classifier_dir, x_test[:2].copy(), feature_dim, tags, review
        )

    pool = registry.candidates(
        client, run.info.experiment_id, ds.meta["data_hash"], cfg.selection_metric, include_run=run_id
    )
    if select == "current":
        pool = [c for c in pool if c.run_id == run_id]
    return _register_best(client, pool, params, out_path, this_run=run_id, logged=logged)


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
    return _register_best(client, pool, params, out_path, this_run=None, logged=None)


def _register_best(
    client: Any, pool: list, params: Params, out_path: str | Path, this_run: str | None, logged: dict | None
) -> dict[str, Any]:
    cfg = params.mlflow
    if not pool:
        raise TrackingError(
            f"no finished candidate with metric {cfg.selection_metric!r} in experiment {cfg.experiment!r} for this data; "
            "run the pipeline (dvc repro) first"
        )
    best = pool[0]
    champ = registry.champion(client, cfg.model_name, cfg.promotion_metric)
    text = description(
        {
            "variant": best.tags.get("aepipe.variant", "?"),
            "head": best.tags.get("aepipe.head", "?"),
            "dataset": best.tags.get("aepipe.dataset", "?"),
            "data_hash": best.tags.get("aepipe.data_hash", ""),
            "labels_used": best.tags.get("aepipe.labels_used", "?"),
        },
        {
            k: best.metrics.get(k, float("nan"))
            for k in ("test_accuracy", "test_macro_f1", "val_accuracy", "test_recon_mse")
        }
        | {cfg.promotion_metric: best.metrics.get(cfg.promotion_metric, float("nan"))},
        champ,
        cfg.promotion_metric,
    )
    reg = registry.register(client, best, cfg.model_name, cfg.alias, text)
    result = {
        "model_name": reg.name,
        "version": reg.version,
        "alias": reg.alias if reg.created else None,
        "created": reg.created,
        "selected_run_id": best.run_id,
        "this_run_id": this_run,
        "this_run_selected": best.run_id == this_run,
        "selection_metric": cfg.selection_metric,
        "selected_metric": best.metric,
        "candidates": len(pool),
        "encoder_version": reg.encoder_version,
        "model_uri": f"models:/{reg.name}/{reg.version}",
    }
    write_json(out_path, result)
    return result


def _metric(key: str, value: float) -> Any:
    import time

    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)
