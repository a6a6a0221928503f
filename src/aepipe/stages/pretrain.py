"""pretrain: fit the autoencoder on every training image, keep the per-epoch curve.

No labels reach the model, except for variants that declare ``uses_labels`` (vae_joint): they
see the labels of the same stratified, seeded ``classifier.labels_per_class`` subset that
``train`` uses, and -1 for every other image.

Under ``torchrun`` (WORLD_SIZE > 1) every rank trains its slice of each global batch and only
rank 0 writes outputs, metrics and MLflow records. Each epoch is checkpointed outside the DVC
outputs (see ``aepipe.training.checkpoint``); a re-run after a kill resumes from it, and it is
deleted once the outputs are written.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from aepipe.config import Params
from aepipe.data.prepared import PreparedDataset, load_prepared
from aepipe.data.splits import labelled_subset
from aepipe.io import write_csv, write_json
from aepipe.models import ModelSpec, build_autoencoder
from aepipe.models.io import save_autoencoder
from aepipe.plots import curves_png
from aepipe.tracking.tracker import NullTracker, Tracker
from aepipe.training.batches import make_source
from aepipe.training.checkpoint import Checkpointer, checkpoint_dir
from aepipe.training.device import resolve_device, seed_everything
from aepipe.training.distributed import DistEnv
from aepipe.training.pretrain import EpochLog, evaluate_loss, label_array, pretrain

# Runs under torchrun (aepipe.stages.runner): every rank trains its slice, rank 0 writes.
DATA_PARALLEL = True


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
    ds = load_prepared(data_dir, mmap=True)
    dist = DistEnv.from_env()
    device = dist.device(resolve_device(params.device))
    dist.start(device)
    try:
        return _run(params, ds, device, dist, Path(model_dir), Path(metrics_path), Path(plots_dir), tracker)
    finally:
        dist.stop()


def _run(
    params: Params,
    ds: PreparedDataset,
    device: Any,
    dist: DistEnv,
    model_dir: Path,
    metrics_path: Path,
    plots_dir: Path,
    tracker: Tracker,
) -> dict[str, Any]:
    generator = seed_everything(params.seed)
    init_source = None
    if params.pretrain.init_from:
        from aepipe.tracking.reuse import load_registered_autoencoder

        model, init_source = load_registered_autoencoder(
            params.pretrain.init_from, ds.input_shape, params.model.name
        )
        model.train()
    else:
        spec = spec_from_params(
            params, ds.input_shape, ds.meta["mean"], ds.meta["std"], n_classes=len(ds.classes)
        )
        model = build_autoencoder(spec)
    tracker.log_params({f"model.{k}": v for k, v in params.model.model_dump().items()})
    tracker.log_params(
        {f"pretrain.{k}": v for k, v in params.pretrain.model_dump().items()} | {"device": str(device)}
    )

    def on_epoch(log: EpochLog) -> None:
        tracker.log_metrics(
            {
                "train_loss": log.train_loss,
                "val_loss": log.val_loss,
                **{f"val_{k}": v for k, v in log.parts.items()},
            },
            step=log.epoch,
        )

    x_train, x_val = ds.images("train"), ds.images("val")
    y_train, y_val = ds.split("train")[1], ds.split("val")[1]
    known = labelled_subset(y_train, params.classifier.labels_per_class, params.seed)
    y_partial = np.full(len(y_train), -1, dtype=np.int64)
    y_partial[known] = y_train[known]
    key = params.model_dump(mode="json", include={"seed", "model", "pretrain"})
    ckpt = Checkpointer(
        checkpoint_dir(
            "pretrain",
            key,
            params.classifier.labels_per_class,
            device.type,
            ds.meta["data_hash"],
            init_source,
            dist.world,
        ),
        enabled=params.pretrain.epochs > 0,
    )
    t0 = time.perf_counter()
    history = pretrain(
        model,
        x_train,
        x_val,
        params.pretrain,
        generator,
        device,
        on_epoch,
        y_partial,
        y_val,
        checkpoint=ckpt,
        dist=dist,
    )
    seconds = time.perf_counter() - t0
    if not dist.is_main:
        return {"rank": dist.rank, "device": str(device), "seconds": round(seconds, 3)}

    if not history:  # epochs: 0 with init_from: report the registered encoder's losses as is
        history = [EpochLog(0, *_losses(model, x_train, x_val, y_partial, y_val, device), 0.0)]
    save_autoencoder(model_dir, model.cpu())
    rows = [{"epoch": h.epoch, "train_loss": h.train_loss, "val_loss": h.val_loss} for h in history]
    write_csv(plots_dir / "pretrain_loss.csv", rows)
    curves_png(
        rows,
        "epoch",
        ["train_loss", "val_loss"],
        plots_dir / "pretrain_loss.png",
        f"{params.model.name} autoencoder loss",
    )
    metrics: dict[str, Any] = {
        "final_train_loss": history[-1].train_loss,
        "final_val_loss": history[-1].val_loss,
        "epochs": params.pretrain.epochs,
        "seconds": round(seconds, 3),
        "images_per_second": round(
            len(x_train) * (params.pretrain.epochs - ckpt.resumed_from) / max(seconds, 1e-9), 1
        ),
    }
    tracker.log_metrics({k: v for k, v in metrics.items() if k != "epochs"})
    if init_source:
        metrics["init_from"] = init_source
        tracker.set_tags({"aepipe.init_from": init_source})
    write_json(metrics_path, metrics)
    tracker.log_artifact(plots_dir / "pretrain_loss.png", "plots")
    tracker.log_artifact(model_dir, "autoencoder")
    ckpt.clear()  # outputs are in place: nothing left to resume
    return {
        **metrics,
        "device": str(device),
        "world_size": dist.world,
        "resumed_from_epoch": ckpt.resumed_from,
        "history": [asdict(h) for h in history],
    }


def _losses(
    model: Any, x_train: Any, x_val: Any, y_train: np.ndarray, y_val: np.ndarray, device: Any
) -> tuple[float, float]:
    losses = []
    for x, y in ((x_train, y_train), (x_val, y_val)):
        source = make_source(
            x, label_array(model, y), "memory" if isinstance(x, np.ndarray) else "stream", device, 64 << 20
        )
        losses.append(evaluate_loss(model.to(device), source, 1024)[0])
    return losses[0], losses[1]
