"""The prepared-dataset format every later stage reads.

A directory (a DVC output, a KFP ``Dataset`` artifact) holding:
- ``x.npy``  uint8 (N, C, H, W) — plain .npy so it can be memory-mapped when larger than RAM;
- ``y.npy``  int64 (N,);
- ``splits.npz``  ``train``, ``val``, ``test`` index arrays into x/y;
- ``meta.json``  class names, shape, channel mean/std of the train split (in [0, 1] units),
  the source and its content hash, and ``data_hash`` over the three files above.

Rows are stored split by split (train, val, test), each in source order, so every split is one
contiguous range of ``x.npy``: a memory-mapped split is a slice (nothing loaded), and streaming
reads it front to back (:meth:`PreparedDataset.rows`). ``prepare`` writes it block by block
(:func:`write_prepared`), so a source larger than RAM prepares with flat memory.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aepipe.data.blockio import NpyRows, NpyWriter, gather_rows, read_block, rows_per_block
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
    directory: Path | None = None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of a split; a contiguous split of a memmap stays a memmap slice."""
        span = self.span(name)
        if span is not None:
            return self.x[span[0] : span[1]], self.y[span[0] : span[1]]
        idx = self.splits[name]
        return self.x[idx], self.y[idx]

    def span(self, name: str) -> tuple[int, int] | None:
        """``(start, stop)`` when the split is one contiguous run of rows (always, since this
        layout was introduced), else None."""
        idx = self.splits[name]
        if len(idx) == 0:
            return 0, 0
        start = int(idx[0])
        return (
            (start, start + len(idx))
            if int(idx[-1]) == start + len(idx) - 1 and np.all(np.diff(idx) == 1)
            else None
        )

    def rows(self, name: str) -> NpyRows:
        """The split's images as file-read rows (:class:`NpyRows`) for streaming."""
        span = self.span(name)
        if span is None or self.directory is None:
            raise DataError(
                f"{self.directory}: split {name!r} is not stored contiguously (prepared by an older aepipe); "
                "re-run `aepipe prepare`"
            )
        return NpyRows(self.directory / "x.npy", *span)

    def images(self, name: str) -> NpyRows | np.ndarray:
        """The split's images for the training loops: file rows (streamable, nothing loaded)
        when the split is contiguous on disk, else an in-memory array."""
        if self.directory is not None and self.span(name) is not None:
            return self.rows(name)
        return np.asarray(self.split(name)[0])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.meta["shape"]
        return int(c), int(h), int(w)


class ChannelStats:
    """Per-channel mean/std in [0, 1] units from uint8 blocks: exact integer histograms, so the
    result does not depend on how the data is cut into blocks, and no float copy is made."""

    def __init__(self, channels: int) -> None:
        self.hist = np.zeros((channels, 256), dtype=np.int64)

    def add(self, block: np.ndarray, rows: int = 4096) -> None:
        for lo in range(0, len(block), rows):  # bincount widens to int64: keep its copy small
            part = block[lo : lo + rows]
            for c in range(self.hist.shape[0]):
                self.hist[c] += np.bincount(part[:, c].reshape(-1), minlength=256)

    def result(self) -> tuple[list[float], list[float]]:
        values = np.arange(256, dtype=np.float64) / 255.0
        count = np.maximum(self.hist.sum(axis=1), 1)
        mean = self.hist @ values / count
        var = self.hist @ values**2 / count - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std = np.where(std < 1e-6, 1.0, std)
        return mean.tolist(), std.tolist()


def channel_stats(x: np.ndarray, chunk: int = 65536) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in [0, 1] units of uint8 images, streamed in chunks so memory stays flat."""
    stats = ChannelStats(x.shape[1])
    for start in range(0, len(x), chunk):
        stats.add(read_block(x, start, start + chunk))
    return stats.result()


def write_prepared(
    directory: str | Path,
    parts: Sequence[np.ndarray],
    y: np.ndarray,
    splits: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write the prepared layout block by block; return the final meta (with stats and hash).

    ``parts`` are uint8 (N_i, C, H, W) arrays (in memory or memory-mapped) read as if
    concatenated; ``splits`` hold sorted indices into that concatenation and ``y``. Rows are
    written split by split, the train split's channel statistics computed on the way.
    """
    offsets = np.cumsum([0, *(len(p) for p in parts)])
    shape = parts[0].shape[1:]
    total = sum(len(splits[k]) for k in SPLITS)
    block = rows_per_block(int(np.prod(shape)))
    stats = ChannelStats(shape[0])
    spans, start = {}, 0
    with atomic_dir(directory) as tmp:
        with NpyWriter(tmp / "x.npy", (total, *shape), np.uint8) as writer:
            for name in SPLITS:
                idx = np.asarray(splits[name], dtype=np.int64)
                for p, part in enumerate(parts):
                    mine = idx[(idx >= offsets[p]) & (idx < offsets[p + 1])] - offsets[p]
                    for rows in gather_rows(part, mine, block) if len(mine) else ():
                        writer.append(rows)
                        if name == "train":
                            stats.add(rows)
                spans[name] = np.arange(start, start + len(idx), dtype=np.int64)
                start += len(idx)
        ordered = np.concatenate([np.asarray(splits[k], dtype=np.int64) for k in SPLITS])
        np.save(tmp / "y.npy", np.asarray(y, dtype=np.int64)[ordered], allow_pickle=False)
        np.savez(tmp / "splits.npz", allow_pickle=False, **spans)
        mean, std = stats.result()
        meta = {**meta, "mean": mean, "std": std}
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
        raise DataError(
            f"{directory}: not a prepared dataset (missing {', '.join(missing)}); run `aepipe prepare` first"
        )
    try:
        meta = json.loads((directory / "meta.json").read_text())
        x = np.load(directory / "x.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        y = np.load(directory / "y.npy", allow_pickle=False)
        with np.load(directory / "splits.npz", allow_pickle=False) as npz:
            splits = {k: npz[k] for k in SPLITS}
    except (ValueError, OSError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{directory}: prepared dataset is unreadable ({exc.__class__.__name__}: "
            f"{' '.join(str(exc).split())[:160]}); re-run `aepipe prepare` (or `dvc checkout prepare`)"
        ) from None
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
        raise DataError(
            f"{directory}: x.npy must be uint8 (N, C, H, W) matching y.npy; re-run `aepipe prepare`"
        )
    _check_meta(directory, meta, x, y, splits)
    return PreparedDataset(x, y, splits, meta, directory)


def _check_meta(
    directory: Path, meta: Any, x: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray]
) -> None:
    """meta.json and the split indices agree with the arrays (a hand-edited or mixed-up
    prepared directory fails here, naming the key, not deep inside a later stage)."""

    def bad(what: str) -> DataError:
        return DataError(
            f"{directory / 'meta.json'}: {what}; re-run `aepipe prepare` (or `dvc checkout prepare`)"
        )

    if not isinstance(meta, dict):
        raise bad("must hold a JSON object")
    missing = [k for k in ("classes", "shape", "mean", "std", "data_hash") if k not in meta]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise bad(f"classes must list at least 2 class names (got {classes!r})")
    if list(meta["shape"]) != list(x.shape[1:]):
        raise bad(f"shape {meta['shape']} does not match x.npy's images {list(x.shape[1:])}")
    for key in ("mean", "std"):
        if not isinstance(meta[key], list) or len(meta[key]) != x.shape[1]:
            raise bad(f"{key} must list one number per channel ({x.shape[1]})")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
        raise bad(f"y.npy holds labels {int(y.min())}..{int(y.max())} but there are {len(classes)} classes")
    for name, idx in splits.items():
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(y)):
            raise DataError(
                f"{directory / 'splits.npz'}: split {name!r} indexes rows outside the {len(y)} images; "
                "re-run `aepipe prepare`"
            )
