"""pretrain: fit the autoencoder on every training image, keep the per-epoch curve.

No labels reach the model, except for variants that declare ``uses_labels`` (vae_joint): they
see the labels of the same stratified, seeded ``classifier.labels_per_class`` subset that
``train`` uses, and -1 for every other image.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from aepipe.config import Params
from aepipe.data.prepared import load_prepared
from aepipe.data.splits import labelled_subset
from aepipe.io import write_csv, write_json
from aepipe.models import ModelSpec, build_autoencoder
from aepipe.models.io import save_autoencoder
from aepipe.plots import curves_png
from aepipe.tracking.tracker import NullTracker, Tracker
from aepipe.training.device import resolve_device, seed_everything
from aepipe.training.pretrain import EpochLog, as_tensor, evaluate_loss, label_tensor, pretrain


def spec_from_params(
    params: Params, input_shape: tuple[int, int, int], mean: list[float], std: list[float], n_classes: int = 0
) -> ModelSpec:
    m = params.model
    return ModelSpec(
        name=m.name,
        input_shape=input_shape,
        latent_dim=m.latent_dim,
        width=m.width,
        depth=m.depth,
        options=m.options().model_dump(mode="json"),
        features=m.features,
        mean=tuple(mean),
        std=tuple(std),
        pool_grid=m.pool_grid,
        n_classes=n_classes,
    )


def run(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    tracker: Tracker = NullTracker(),
) -> dict[str, Any]:
    ds = load_prepared(data_dir)
    device = resolve_device(params.device)
    generator = seed_everything(params.seed)
    init_source = None
    if params.pretrain.init_from:
        from aepipe.tracking.reuse import load_registered_autoencoder

        model, init_source = load_registered_autoencoder(params.pretrain.init_from, ds.input_shape, params.model.name)
        model.train()
    else:
        spec = spec_from_params(params, ds.input_shape, ds.meta["mean"], ds.meta["std"], n_classes=len(ds.classes))
        model = build_autoencoder(spec)
    tracker.log_params({f"model.{k}": v for k, v in params.model.model_dump().items()})
    tracker.log_params({f"pretrain.{k}": v for k, v in params.pretrain.model_dump().items()} | {"device": str(device)})

    def on_epoch(log: EpochLog) -> None:
        tracker.log_metrics({"train_loss": log.train_loss, "val_loss": log.val_loss, **{f"val_{k}": v for k, v in log.parts.items()}}, step=log.epoch)

    x_train, y_train = ds.split("train")
    x_val, y_val = ds.split("val")
    known = labelled_subset(y_train, params.classifier.labels_per_class, params.seed)
    y_partial = np.full(len(y_train), -1, dtype=np.int64)
    y_partial[known] = y_train[known]
    t0 = time.perf_counter()
    history = pretrain(model, x_train, x_val, params.pretrain, generator, device, on_epoch, y_partial, y_val)
    seconds = time.perf_counter() - t0

    if not history:  # epochs: 0 with init_from: report the registered encoder's losses as is
        train_loss, _ = evaluate_loss(model, as_tensor(x_train, device), 1024, label_tensor(model, y_partial, device))
        val_loss, _ = evaluate_loss(model, as_tensor(x_val, device), 1024, label_tensor(model, y_val, device))
        history = [EpochLog(0, train_loss, val_loss, 0.0)]
    save_autoencoder(model_dir, model.cpu())
    rows = [{"epoch": h.epoch, "train_loss": h.train_loss, "val_loss": h.val_loss} for h in history]
    write_csv(Path(plots_dir) / "pretrain_loss.csv", rows)
    curves_png(rows, "epoch", ["train_loss", "val_loss"], Path(plots_dir) / "pretrain_loss.png", f"{params.model.name} autoencoder loss")
    metrics = {
        "final_train_loss": history[-1].train_loss,
        "final_val_loss": history[-1].val_loss,
        "epochs": params.pretrain.epochs,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(x_train) * params.pretrain.epochs / max(seconds, 1e-9), 1),
    }
    tracker.log_metrics({k: v for k, v in metrics.items() if k != "epochs"})
    if init_source:
        metrics["init_from"] = init_source
        tracker.set_tags({"aepipe.init_from": init_source})
    write_json(metrics_path, metrics)
    tracker.log_artifact(Path(plots_dir) / "pretrain_loss.png", "plots")
    tracker.log_artifact(model_dir, "autoencoder")
    return {**metrics, "device": str(device), "history": [asdict(h) for h in history]}
