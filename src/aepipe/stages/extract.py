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


def load_features(features_dir: str | Path, split: str) -> np.ndarray:
    from aepipe.errors import DataError

    path = Path(features_dir) / f"{split}.npy"
    if not path.is_file():
        raise DataError(f"{path}: features not found; run `aepipe extract` first")
    return np.load(path, allow_pickle=False)
