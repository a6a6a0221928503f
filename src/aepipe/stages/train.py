"""train: fit the classifier head on (a labelled subset of) the training split.

Model selection (the probe's C, early stopping) sees only the validation split; the test split
is left to ``evaluate``. Heads on frozen features read ``features/``; the finetune head also
reads the images and the autoencoder, and its fine-tuned encoder is saved in the classifier dir.
Heads trained by gradient descent checkpoint every epoch outside the DVC outputs and resume
after a kill; the checkpoint is deleted once the classifier is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aepipe.config import Params
from aepipe.data.prepared import load_prepared
from aepipe.data.splits import labelled_subset
from aepipe.errors import DataError, ModelError
from aepipe.io import sha256_file, write_csv, write_json
from aepipe.models.heads import HEADS
from aepipe.models.io import SPEC, WEIGHTS, head_spec, save_classifier
from aepipe.stages.extract import load_features
from aepipe.tracking.tracker import NullTracker, Tracker
from aepipe.training.checkpoint import Checkpointer, checkpoint_dir
from aepipe.training.device import resolve_device, seed_everything
from aepipe.training.fit import HeadData
from aepipe.training.trainers import TRAINERS


def run(
    params: Params,
    data_dir: str | Path,
    features_dir: str | Path,
    model_dir: str | Path,
    classifier_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    tracker: Tracker = NullTracker(),
) -> dict[str, Any]:
    cfg = params.classifier
    ds = load_prepared(data_dir, mmap=True)
    seed_everything(params.seed)
    _, y_train = ds.split("train")
    _, y_val = ds.split("val")
    picked = labelled_subset(y_train, cfg.labels_per_class, params.seed)
    # memory-mapped: only the labelled rows are read (features of millions of images need not fit)
    f_train = np.ascontiguousarray(load_features(features_dir, "train", len(y_train), mmap=True)[picked])
    f_val = load_features(features_dir, "val", len(y_val))
    if f_val.shape[1] != f_train.shape[1]:
        raise DataError(
            f"{features_dir}: train.npy has {f_train.shape[1]} features per image but val.npy has "
            f"{f_val.shape[1]}; they come from different runs: re-run `aepipe extract`"
        )

    device = resolve_device(params.device)
    # the encoder is its weights and its spec: model.features / model.pool_grid change the spec
    # (and the feature width) but not the weights, and a head checkpoint fits only one width
    weights, spec_file = Path(model_dir) / WEIGHTS, Path(model_dir) / SPEC
    key = (
        params.seed,
        cfg.model_dump(mode="json"),
        device.type,
        ds.meta["data_hash"],
        sha256_file(weights) if weights.is_file() else None,
        sha256_file(spec_file) if spec_file.is_file() else None,
        f_train.shape[1],
    )
    ckpt = Checkpointer(checkpoint_dir("train", *key))
    data = HeadData(
        f_train,
        y_train[picked],
        f_val,
        y_val,
        n_classes=len(ds.classes),
        cfg=cfg,
        seed=params.seed,
        device=device,
        data_dir=Path(data_dir),
        model_dir=Path(model_dir),
        picked=picked,
        checkpoint=ckpt,
    )
    name = cfg.resolved_head  # `auto` becomes the head it stands for
    head = HEADS[name]
    fit = TRAINERS[name](data)
    if head.trains_encoder and fit.autoencoder is None:
        raise ModelError(f"classifier.head {name!r} trains the encoder but its trainer returned none to save")
    info = {"val_accuracy": fit.val_accuracy, **fit.info}
    spec = head_spec(
        name,
        f_train.shape[1],
        len(ds.classes),
        classes=ds.classes,
        labels_used=len(picked),
        data_alpha=ds.meta.get("alpha"),  # None: prepared before it was recorded
        options=fit.options,
        **info,
    )
    encoder = fit.autoencoder if head.trains_encoder else None
    save_classifier(classifier_dir, fit.module.cpu(), spec, encoder.cpu() if encoder is not None else None)
    ckpt.clear()  # the classifier is saved: nothing left to resume

    metrics = {"val_accuracy": fit.val_accuracy, "labels_used": len(picked)}
    write_json(metrics_path, metrics)
    write_csv(Path(plots_dir) / "train_curve.csv", fit.curve)
    tracker.log_params({f"classifier.{k}": v for k, v in cfg.model_dump().items()})
    tracker.log_metrics(
        metrics | {k: v for k, v in info.items() if isinstance(v, (int, float)) and k != "val_accuracy"}
    )
    for row in fit.curve:
        tracker.log_metrics(
            {f"selection_{k}": v for k, v in row.items() if k.endswith("accuracy")}, step=int(row["step"])
        )
    return {
        **metrics,
        **info,
        "head": name,
        "n_classes": len(ds.classes),
        "class_counts": np.bincount(y_train[picked]).tolist(),
        "resumed_from_epoch": ckpt.resumed_from,
    }
