"""PNG figures reviewers open in MLflow and `dvc plots show` (image plots render offline)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from aepipe.io import atomic_path


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def confusion_png(
    cm: np.ndarray, classes: list[str], path: str | Path, title: str = "Confusion matrix (test)"
) -> None:
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    if n <= 20:
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > thresh else "black",
                )
    _save(fig, path)


def reconstruction_png(originals: np.ndarray, recons: np.ndarray, path: str | Path) -> None:
    """Two rows per block: originals above their reconstructions. Inputs (N, C, H, W) in [0, 1]."""
    n = len(originals)
    cols = min(n, 16)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 0.8, 2 * rows * 0.85), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        for k, img in enumerate((originals[i], recons[i])):
            ax = axes[2 * r + k, c]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    axes[0, 0].set_title("original ↑ / reconstruction ↓", loc="left", fontsize=8)
    _save(fig, path)


def curves_png(rows: list[dict[str, float]], x: str, ys: list[str], path: str | Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for y in ys:
        ax.plot([r[x] for r in rows], [r[y] for r in rows], marker="o" if len(rows) < 30 else None, label=y)
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def projection_png(
    points: np.ndarray, labels: np.ndarray, classes: list[str], path: str | Path, title: str
) -> None:
    """2-D scatter of the latent space, one colour per class."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, name in enumerate(classes):
        sel = labels == i
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(markerscale=2, fontsize=7, loc="best", ncol=2 if len(classes) > 10 else 1)
    _save(fig, path)


def examples_png(
    images: np.ndarray, captions: list[str], path: str | Path, title: str, cols: int = 8
) -> None:
    """A captioned grid of images (N, C, H, W) in [0, 1]; an empty grid says so."""
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        img = images[i]
        ax.imshow(
            img[0] if img.shape[0] == 1 else np.clip(img.transpose(1, 2, 0), 0, 1),
            cmap="gray" if img.shape[0] == 1 else None,
            vmin=0,
            vmax=1,
        )
        ax.set_title(captions[i], fontsize=7)
    if n == 0:
        axes[0, 0].text(0, 0.5, "none", fontsize=10)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
