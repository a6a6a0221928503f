"""register: log the encoder+classifier pair as one MLflow model, give it the challenger alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aepipe.config import Params
from aepipe.data.prepared import load_prepared
from aepipe.io import read_json, write_json
from aepipe.models.io import SPEC
from aepipe.tracking.registry import log_and_register


def run(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    classifier_dir: str | Path,
    eval_metrics_path: str | Path,
    out_path: str | Path,
    run_id: str,
) -> dict[str, Any]:
    ds = load_prepared(data_dir, mmap=True)
    metrics = read_json(eval_metrics_path, "evaluation metrics")
    head = read_json(Path(classifier_dir) / SPEC, "classifier spec")
    x_test, _ = ds.split("test")
    tags = {
        "aepipe.data_hash": ds.meta["data_hash"],
        "aepipe.dataset": ds.meta["source"],
        "aepipe.variant": params.model.name,
        "aepipe.head": head["head"],
        "aepipe.labels_used": str(head.get("labels_used", "")),
        "aepipe.test_accuracy": f"{metrics['test_accuracy']:.6f}",
        "aepipe.val_accuracy": f"{metrics['val_accuracy']:.6f}",
    }
    description = (
        f"{params.model.name} autoencoder + {head['head']} head on {ds.meta['source']} "
        f"(data {ds.meta['data_hash'][:12]}). Test accuracy {metrics['test_accuracy']:.4f}, "
        f"macro-F1 {metrics['test_macro_f1']:.4f}, validation accuracy {metrics['val_accuracy']:.4f}, "
        f"reconstruction MSE {metrics['test_recon_mse']:.5f}. Input: uint8 images N×{'×'.join(map(str, ds.input_shape))}."
    )
    reg = log_and_register(
        run_id,
        model_dir,
        classifier_dir,
        x_test[:2].copy(),
        len(ds.classes),
        params.mlflow.model_name,
        params.mlflow.alias,
        tags,
        description,
    )
    result = {"model_name": reg.name, "version": reg.version, "alias": reg.alias, "model_uri": reg.model_uri, "run_id": reg.run_id, "test_accuracy": metrics["test_accuracy"]}
    write_json(out_path, result)
    return result
