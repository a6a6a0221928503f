"""evaluate: the only stage that touches the test split.

Scores the encoder+classifier pair end to end on raw test images (the same forward path and
the same weights, fine-tuned encoder included, that the registered MLflow model uses), plus
the reconstruction quality of the pretrained autoencoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from aepipe.config import Params
from aepipe.data.prepared import load_prepared
from aepipe.io import write_csv, write_json
from aepipe.models.io import load_autoencoder, load_pair
from aepipe.models.pair import EncoderClassifier
from aepipe.plots import confusion_png, examples_png, projection_png, reconstruction_png
from aepipe.tracking.tracker import NullTracker, Tracker
from aepipe.training.device import resolve_device
from aepipe.training.pretrain import as_tensor


__all__ = ["load_pair", "reconstruction_mse", "run"]


@torch.inference_mode()
def reconstruction_mse(model: Any, x_u8: np.ndarray, device: torch.device, batch_size: int) -> float:
    total, n = 0.0, 0
    for start in range(0, len(x_u8), batch_size):
        xb = as_tensor(x_u8[start : start + batch_size], device).float().div_(255.0)
        recon = model.reconstruct(xb)
        total += float(((recon.float() - xb) ** 2).mean(dim=(1, 2, 3)).sum())
        n += len(xb)
    return total / max(n, 1)


REVIEW_PNGS = ("confusion.png", "reconstructions.png", "latent_projection.png", "misclassified.png")


def review_figures(
    pair: EncoderClassifier,
    x: np.ndarray,
    y: np.ndarray,
    proba: np.ndarray,
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

    keep = np.random.default_rng(0).permutation(len(x))[:max_points]
    keep.sort()
    feats = extract_features(pair.autoencoder, x[keep], device, bs, desc="project")
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

    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]])][:max_errors]
    captions = [f"{classes[y[i]]}→{classes[pred[i]]} {proba[i, pred[i]]:.2f}" for i in wrong]
    images = x[wrong].astype(np.float32) / 255.0
    examples_png(
        images,
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
    pair, _ = load_pair(model_dir, classifier_dir, device)
    # Reconstructions show what pretraining learnt; a fine-tuned encoder no longer fits the decoder.
    pretrained = load_autoencoder(model_dir, device)
    classes = ds.classes
    bs = params.evaluate.batch_size

    x_test, y_test = ds.split("test")
    x_val, y_val = ds.split("val")
    proba = pair.predict_proba(x_test, bs)
    pred = proba.argmax(1)
    val_pred = pair.predict_proba(x_val, bs).argmax(1)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y_test, pred, labels=labels)
    per_class = {classes[i]: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i in labels}
    metrics = {
        "test_accuracy": float((pred == y_test).mean()),
        "test_macro_f1": float(f1_score(y_test, pred, labels=labels, average="macro", zero_division=0)),
        "val_accuracy": float((val_pred == y_val).mean()),
        "val_macro_f1": float(f1_score(y_val, val_pred, labels=labels, average="macro", zero_division=0)),
        "test_recon_mse": reconstruction_mse(pretrained, x_test, device, bs),
        "n_test": int(len(y_test)),
        "per_class_accuracy": {k: v for k, v in per_class.items() if v == v},
    }
    write_json(metrics_path, metrics)

    plots = Path(plots_dir)
    write_csv(
        plots / "confusion.csv",
        [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(y_test, pred)],
    )
    confusion_png(cm, classes, plots / "confusion.png")
    k = min(params.evaluate.n_reconstructions, len(x_test))
    with torch.inference_mode():
        xb = as_tensor(x_test[:k], device).float().div_(255.0)
        recon = pretrained.reconstruct(xb).float().cpu().numpy()
    reconstruction_png(xb.cpu().numpy(), recon, plots / "reconstructions.png")
    review_figures(pair, x_test, y_test, proba, classes, device, bs, plots)

    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    tracker.log_metrics({f"test_accuracy_class_{c}": v for c, v in metrics["per_class_accuracy"].items()})
    for name in REVIEW_PNGS:
        tracker.log_artifact(plots / name, "plots")
    tracker.log_artifact(metrics_path, "metrics")
    return metrics
