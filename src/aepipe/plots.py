"""PNG figures reviewers open in MLflow and `dvc plots show` (image plots render offline)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aepipe.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:  # noqa: ANN001
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def confusion_png(cm: np.ndarray, classes: list[str], path: str | Path, title: str = "Confusion matrix (test)") -> None:
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
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if cm[i, j] > thresh else "black")
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
