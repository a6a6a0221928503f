"""The prepared-dataset format every later stage reads.

A directory (a DVC output, a KFP ``Dataset`` artifact) holding:
- ``x.npy``  uint8 (N, C, H, W) — plain .npy so it can be memory-mapped when larger than RAM;
- ``y.npy``  int64 (N,);
- ``splits.npz``  ``train``, ``val``, ``test`` index arrays into x/y;
- ``meta.json``  class names, shape, channel mean/std of the train split (in [0, 1] units),
  the source and its content hash, and ``data_hash`` over the three files above.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aepipe.errors import DataError
from aepipe.io import atomic_dir, sha256_file

SPLITS = ("train", "val", "test")
FILES = ("x.npy", "y.npy", "splits.npz")


@dataclass
class PreparedDataset:
    x: np.ndarray
    y: np.ndarray
    splits: dict[str, np.ndarray]
    meta: dict[str, Any]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.splits[name]
        return self.x[idx], self.y[idx]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.meta["shape"]
        return int(c), int(h), int(w)


def channel_stats(x: np.ndarray, chunk: int = 65536) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in [0, 1] units, streamed in chunks so memory stays flat."""
    c = x.shape[1]
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    count = 0
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block**2).sum(axis=(0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return mean.tolist(), std.tolist()


def save_prepared(directory: str | Path, x: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """Write atomically (whole directory renamed into place) and return the final meta."""
    with atomic_dir(directory) as tmp:
        np.save(tmp / "x.npy", x, allow_pickle=False)
        np.save(tmp / "y.npy", y.astype(np.int64), allow_pickle=False)
        np.savez(tmp / "splits.npz", **{k: np.asarray(splits[k], dtype=np.int64) for k in SPLITS})
        h = hashlib.sha256()
        for name in FILES:
            h.update(sha256_file(tmp / name).encode())
        meta = {**meta, "data_hash": h.hexdigest()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def load_prepared(directory: str | Path, mmap: bool = False) -> PreparedDataset:
    directory = Path(directory)
    missing = [f for f in (*FILES, "meta.json") if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{directory}: not a prepared dataset (missing {', '.join(missing)}); run `aepipe prepare` first")
    try:
        meta = json.loads((directory / "meta.json").read_text())
        x = np.load(directory / "x.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        y = np.load(directory / "y.npy", allow_pickle=False)
        with np.load(directory / "splits.npz", allow_pickle=False) as npz:
            splits = {k: npz[k] for k in SPLITS}
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{directory}: prepared dataset is unreadable ({exc}); re-run `aepipe prepare`") from None
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
        raise DataError(f"{directory}: x.npy must be uint8 (N, C, H, W) matching y.npy; re-run `aepipe prepare`")
    return PreparedDataset(x, y, splits, meta)
