"""extract: frozen encoder features for every split (eval mode, deterministic).

Streams each split from x.npy and appends its features to the output file, so memory stays
flat however large the split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aepipe.config import Params
from aepipe.data.prepared import SPLITS, load_prepared
from aepipe.io import atomic_dir
from aepipe.models.io import load_autoencoder
from aepipe.tracking.tracker import NullTracker, Tracker
from aepipe.training.device import resolve_device
from aepipe.training.features import extract_to_npy


def run(
    params: Params,
    data_dir: str | Path,
    model_dir: str | Path,
    features_dir: str | Path,
    tracker: Tracker = NullTracker(),
) -> dict[str, Any]:
    ds = load_prepared(data_dir, mmap=True)
    device = resolve_device(params.device)
    model = load_autoencoder(model_dir, device)
    shapes = {}
    with atomic_dir(features_dir) as tmp:
        for split in SPLITS:
            shape = extract_to_npy(
                model,
                ds.images(split),
                device,
                tmp / f"{split}.npy",
                params.evaluate.batch_size,
                desc=f"extract {split}",
            )
            shapes[split] = list(shape)
    tracker.log_metrics({f"n_{k}": v[0] for k, v in shapes.items()} | {"feature_dim": shapes["train"][1]})
    return {"shapes": shapes}


def load_features(
    features_dir: str | Path, split: str, rows: int | None = None, mmap: bool = False
) -> np.ndarray:
    """A split's features (float, 2-D), checked against the number of images of that split."""
    from aepipe.errors import DataError

    path = Path(features_dir) / f"{split}.npy"
    if not path.is_file():
        raise DataError(f"{path}: features not found; run `aepipe extract` first")
    try:
        feats: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{path}: not a readable features file ({exc.__class__.__name__}); re-run `aepipe extract`"
        ) from None
    if feats.ndim != 2 or feats.dtype.kind != "f":
        raise DataError(
            f"{path}: features must be a 2-D float array (got {feats.dtype} {feats.shape}); "
            "re-run `aepipe extract`"
        )
    if rows is not None and len(feats) != rows:
        raise DataError(
            f"{path}: {len(feats)} rows but the {split} split has {rows} images: the features come from "
            "another dataset; re-run `aepipe extract` (dvc repro)"
        )
    return feats
