"""Seeded, stratified splits and labelled subsets."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held_out) with ``fraction`` of each class held out."""
    from aepipe.errors import DataError

    try:
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(indices)} images of {len(np.unique(labels))} classes with fraction "
            f"{fraction} ({exc}); raise data.val_fraction / data.test_fraction in params.yaml or add images"
        ) from None
    return np.sort(kept), np.sort(held)


def labelled_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Positions of up to ``per_class`` examples of each class (all of them when None).

    Drawn with a seeded generator so that the same params always pick the same images.
    """
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))
