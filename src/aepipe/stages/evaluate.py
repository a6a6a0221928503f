"""evaluate: the only stage that touches the test split.

Scores the encoder+classifier pair end to end on raw test images (the same forward path and
the same weights, fine-tuned encoder included, that the registered MLflow model uses), plus
the reconstruction quality of the pretrained autoencoder.

Flat in memory like extract: the test and validation splits are read from x.npy in blocks of
rows (plain file reads, see ``aepipe.data.blockio``) and only per-image results are kept (the
predicted class, its probability, the squared error); the figures read back the few rows they
show.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from aepipe.config import Params
from aepipe.data.blockio import NpyRows, gather_rows, rows_per_block
from aepipe.data.prepared import PreparedDataset, load_prepared
from aepipe.errors import ModelError
from aepipe.io import write_csv, write_json
from aepipe.models.io import SPEC, load_autoencoder, load_pair
from aepipe.models.pair import EncoderClassifier
from aepipe.plots import confusion_png, examples_png, projection_png, reconstruction_png
from aepipe.tracking.tracker import NullTracker, Tracker
from aepipe.training.device import resolve_device
from aepipe.training.pretrain import as_tensor

__all__ = ["load_pair", "reconstruction_mse", "run"]

BLOCK_BYTES = 8 << 20  # uint8 rows per block; predict_proba makes a float32 copy 4x that size


def _blocks(x: np.ndarray | NpyRows, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 rows of a split, a block (a whole number of batches) at a time."""
    row_bytes = int(np.prod(x.shape[1:]))
    rows = max(1, rows_per_block(row_bytes, BLOCK_BYTES) // batch_size) * batch_size
    if isinstance(x, NpyRows):
        for _, block in x.blocks(rows):
            yield block
    else:
        for start in range(0, len(x), rows):
            yield np.asarray(x[start : start + rows])


def predict(
    pair: EncoderClassifier, x: np.ndarray | NpyRows, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, its probability) of every row, streamed."""
    preds, confs = [], []
    for block in _blocks(x, batch_size):
        proba = pair.predict_proba(block, batch_size)
        preds.append(proba.argmax(1))
        confs.append(proba.max(1).astype(np.float32))
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(preds), np.concatenate(confs)


@torch.inference_mode()
def reconstruction_mse(
    model: Any, x_u8: np.ndarray | NpyRows, device: torch.device, batch_size: int
) -> float:
    total, n = 0.0, 0
    for block in _blocks(x_u8, batch_size):
        for start in range(0, len(block), batch_size):
            xb = as_tensor(block[start : start + batch_size], device).float().div_(255.0)
            recon = model.reconstruct(xb)
            total += float(((recon.float() - xb) ** 2).mean(dim=(1, 2, 3)).sum())
            n += len(xb)
    return total / max(n, 1)


REVIEW_PNGS = ("confusion.png", "reconstructions.png", "latent_projection.png", "misclassified.png")


def _rows(ds: PreparedDataset, split: str, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` (sorted, relative to the split) of a split's images, read as few ranges."""
    start = ds.span(split)
    if start is None or len(index) == 0:
        return np.asarray(ds.split(split)[0][index])
    return np.concatenate(
        list(gather_rows(ds.x, index + start[0], rows_per_block(int(np.prod(ds.x.shape[1:])))))
    )


def review_figures(
    pair: EncoderClassifier,
    ds: PreparedDataset,
    y: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    classes: list[str],
    device: torch.device,
    bs: int,
    plots: Path,
    max_points: int = 2000,
    max_errors: int = 32,
) -> None:
    """Latent-space projection and the most confident mistakes, for reviewers."""
    from sklearn.decomposition import PCA

    from aepipe.training.pretrain import extract_features

    keep = np.random.default_rng(0).permutation(len(y))[:max_points]
    keep.sort()
    feats = extract_features(pair.autoencoder, _rows(ds, "test", keep), device, bs, desc="project")
    points = (
        PCA(n_components=2, random_state=0).fit_transform(feats)
        if feats.shape[1] >= 2
        else np.c_[feats, np.zeros(len(feats))]
    )
    projection_png(
        points,
        y[keep],
        classes,
        plots / "latent_projection.png",
        f"Test features, PCA to 2-D ({len(keep)} images)",
    )

    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:max_errors]
    captions = [f"{classes[y[i]]}→{classes[pred[i]]} {conf[i]:.2f}" for i in wrong]
    order = np.argsort(wrong, kind="stable")
    shown = np.empty((len(wrong), *ds.x.shape[1:]), dtype=np.uint8)
    shown[order] = _rows(ds, "test", wrong[order]) if len(wrong) else shown
    examples_png(
        shown.astype(np.float32) / 255.0,
        captions,
        plots / "misclassified.png",
        f"Most confident mistakes (true→predicted, p): {len(wrong)} of {int((pred != y).sum())}",
    )


def run(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    classifier_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    tracker: Tracker = NullTracker(),
) -> dict[str, Any]:
    ds = load_prepared(data_dir, mmap=True)
    device = resolve_device(params.device)
    pair, spec = load_pair(model_dir, classifier_dir, device)
    classes = ds.classes
    if spec["n_classes"] != len(classes):
        raise ModelError(
            f"{Path(classifier_dir) / SPEC}: the classifier has {spec['n_classes']} classes but {data_dir} "
            f"has {len(classes)}: they come from different datasets; re-run `aepipe train` (dvc repro)"
        )
    # Reconstructions show what pretraining learnt; a fine-tuned encoder no longer fits the decoder.
    pretrained = load_autoencoder(model_dir, device)
    bs = params.evaluate.batch_size

    x_test, x_val = ds.images("test"), ds.images("val")
    y_test, y_val = ds.split("test")[1], ds.split("val")[1]
    pred, conf = predict(pair, x_test, bs)
    val_pred, _ = predict(pair, x_val, bs)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y_test, pred, labels=labels)
    per_class = {classes[i]: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i in labels}
    metrics: dict[str, Any] = {
        "test_accuracy": float((pred == y_test).mean()),
        "test_macro_f1": float(f1_score(y_test, pred, labels=labels, average="macro", zero_division=0)),
        "val_accuracy": float((val_pred == y_val).mean()),
        "val_macro_f1": float(f1_score(y_val, val_pred, labels=labels, average="macro", zero_division=0)),
        "test_recon_mse": reconstruction_mse(pretrained, x_test, device, bs),
        "n_test": len(y_test),
        "per_class_accuracy": {k: v for k, v in per_class.items() if v == v},
    }

    plots = Path(plots_dir)
    write_csv(
        plots / "confusion.csv",
        (
            {"actual": classes[a], "predicted": classes[p]}
            for a, p in zip(y_test.tolist(), pred.tolist(), strict=True)
        ),
    )
    confusion_png(cm, classes, plots / "confusion.png")
    k = min(params.evaluate.n_reconstructions, len(y_test))
    with torch.inference_mode():
        xb = as_tensor(_rows(ds, "test", np.arange(k)), device).float().div_(255.0)
        recon = pretrained.reconstruct(xb).float().cpu().numpy()
    reconstruction_png(xb.cpu().numpy(), recon, plots / "reconstructions.png")
    review_figures(pair, ds, y_test, pred, conf, classes, device, bs, plots)
    write_json(metrics_path, metrics)  # last: a failure above leaves the old metrics with the old plots

    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    tracker.log_metrics({f"test_accuracy_class_{c}": v for c, v in metrics["per_class_accuracy"].items()})
    for name in REVIEW_PNGS:
        tracker.log_artifact(plots / name, "plots")
    tracker.log_artifact(metrics_path, "metrics")
    return metrics
