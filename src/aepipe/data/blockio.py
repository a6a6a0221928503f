"""Row blocks of ``.npy`` files read and written with plain file I/O, so memory stays flat.

Why not a memmap: every page of a memory-mapped file a process touches counts in its RSS until
it is unmapped, so sweeping a 2M-image memmap once grows RSS by the whole file even though the
kernel could drop those pages. ``pread`` into a reused buffer and ``write`` from one keep the
data in the page cache (reclaimable, not in RSS). Source arrays that arrive as memmaps (the
``npy:`` source) are read block by block and their mapped pages dropped after each block
(:func:`read_block`).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aepipe.errors import DataError

BLOCK_BYTES = 32 << 20  # rows per block are sized to about this many bytes


def rows_per_block(row_bytes: int, block_bytes: int = BLOCK_BYTES) -> int:
    return max(1, block_bytes // max(row_bytes, 1))


def _mapping(arr: np.ndarray) -> mmap.mmap | None:
    base: object = arr
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def release_pages(arr: np.ndarray) -> None:
    """Unmap the pages of ``arr``'s memory map from this process (they stay in the page cache)."""
    mapping = _mapping(arr)
    if mapping is not None and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)


def read_block(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    """A contiguous in-memory copy of ``arr[start:stop]``; a memmap's pages are dropped after."""
    block = np.array(arr[start:stop], order="C")  # always a copy, never a view into the map
    release_pages(arr)
    return block


def gather_rows(arr: np.ndarray, index: np.ndarray, span_rows: int) -> Iterator[np.ndarray]:
    """``arr[index]`` for a sorted ``index``, in pieces each read as one range of at most
    ``span_rows`` rows, so a sparse index never pulls a huge range into memory."""
    lo = 0
    while lo < len(index):
        first = int(index[lo])
        hi = max(int(np.searchsorted(index, first + span_rows, side="left")), lo + 1)
        part = index[lo:hi]
        yield read_block(arr, first, int(part[-1]) + 1)[part - first]
        lo = hi


class NpyRows:
    """Rows ``[start, stop)`` of a C-ordered ``.npy`` file, read with ``pread`` (no mapping)."""

    def __init__(self, path: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = reader(fh)
            except ValueError as exc:
                raise DataError(
                    f"{self.path}: not a readable .npy file ({exc}); re-run the stage that writes it"
                ) from None
            self.offset = fh.tell()
        if fortran or dtype.hasobject or not shape:
            raise DataError(
                f"{self.path}: needs a C-ordered numeric array with rows; re-run the stage that writes it"
            )
        self.dtype, self.row_shape = dtype, tuple(shape[1:])
        self.row_bytes = int(dtype.itemsize * np.prod(self.row_shape, dtype=np.int64))
        total = int(shape[0])
        self.start, self.stop = start, total if stop is None else stop
        if not 0 <= self.start <= self.stop <= total:
            raise DataError(
                f"{self.path}: rows {start}..{stop} are outside its {total} rows; re-run `aepipe prepare`"
            )
        expected = self.offset + total * self.row_bytes
        if os.path.getsize(self.path) < expected:
            raise DataError(
                f"{self.path}: truncated ({os.path.getsize(self.path)} bytes, header says {expected}); "
                "re-run the stage that writes it"
            )

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of this range into ``out`` (allocated when None)."""
        count = stop - start
        if out is None:
            out = np.empty((count, *self.row_shape), dtype=self.dtype)
        view = out.reshape(-1).view(np.uint8).data[: count * self.row_bytes]
        pos = self.offset + (self.start + start) * self.row_bytes
        with open(self.path, "rb", buffering=0) as fh:
            done = 0
            while done < len(view):
                got = os.preadv(fh.fileno(), [view[done:]], pos + done)
                if got <= 0:
                    raise DataError(
                        f"{self.path}: ended early while reading rows; re-run the stage that writes it"
                    )
                done += got
        return out[:count]

    def blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` in order; the yielded array is reused, copy it to keep it."""
        buf = np.empty((min(block_rows, max(len(self), 1)), *self.row_shape), dtype=self.dtype)
        for lo in range(0, len(self), block_rows):
            hi = min(lo + block_rows, len(self))
            yield lo, self.read(lo, hi, buf[: hi - lo])


class NpyWriter:
    """Write a ``.npy`` of known shape block by block (plain writes; nothing stays in RSS)."""

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        self.written = 0
        self.fh = open(self.path, "wb")  # noqa: SIM115 - owned by the writer, closed in close()/__exit__
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        try:
            np.lib.format.write_array_header_1_0(self.fh, header)
        except ValueError:  # header longer than format 1.0 allows
            self.fh.seek(0)
            np.lib.format.write_array_header_2_0(self.fh, header)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.written + len(rows) > self.shape[0]:
            raise ValueError(
                f"{self.path}: rows of shape {rows.shape} do not fit {self.shape} after {self.written} rows"
            )
        self.fh.write(rows.reshape(-1).view(np.uint8).data)
        self.written += len(rows)

    def close(self) -> None:
        self.fh.close()
        if self.written != self.shape[0]:
            raise ValueError(f"{self.path}: {self.written} rows written, {self.shape[0]} declared")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.fh.close()
