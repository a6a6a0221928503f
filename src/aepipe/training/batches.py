"""Where training batches come from: a split resident on the device, or streamed from x.npy.

Both hand out uint8 batches already on the device; the loop converts to float there, so the
host never touches a per-sample object (no Dataset/DataLoader, no collate). Rows are gathered
with ``index_select``, which on a CPU is about ten times faster than ``x[idx]`` for uint8 rows.

- :class:`DeviceBatches` (data fits): the split is one uint8 tensor on the device and an epoch
  is slices of one seeded permutation (``torch.randperm`` on the batch-order generator).
- :class:`StreamBatches` (data does not fit): an epoch visits the split's blocks (about
  ``BLOCK_BYTES`` of rows each) in a seeded random order; ``stream_buffer_mb`` worth of blocks
  at a time are read with plain file reads (into pinned memory on CUDA), copied to the device
  in one transfer and permuted there. The rows a buffer leaves over (less than a batch) move
  on to the next buffer, so every batch but the epoch's last is full. This is a local shuffle:
  two rows far apart in the file meet in a batch only if their blocks share a buffer, and the
  batches differ from :class:`DeviceBatches` for the same seed. The next buffer is read by a
  background thread while the current one trains.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from aepipe.data.blockio import BLOCK_BYTES, NpyRows, rows_per_block
from aepipe.training.device import available_memory
from aepipe.training.features import as_tensor

Batch = tuple[torch.Tensor, torch.Tensor | None]
MEMORY_SHARE = 0.5  # auto: keep the data resident when it takes at most this share of free memory


class ArrayRows:
    """An in-memory (or memory-mapped) array behind the :class:`NpyRows` interface."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.row_bytes = int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize
        self.row_shape, self.dtype = tuple(x.shape[1:]), x.dtype

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return np.array(self.x[start:stop])
        out[: stop - start] = self.x[start:stop]
        return out[: stop - start]


Rows = NpyRows | ArrayRows


def as_rows(x: np.ndarray | Rows) -> Rows:
    return x if isinstance(x, (NpyRows, ArrayRows)) else ArrayRows(x)


def take_rows(rows: Rows, index: np.ndarray) -> np.ndarray:
    """Rows at ``index`` (a small labelled subset), read one contiguous run at a time."""
    out = np.empty((len(index), *rows.row_shape), dtype=rows.dtype)
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
    for run in np.split(np.arange(len(sorted_idx)), breaks):
        if len(run):
            lo, hi = int(sorted_idx[run[0]]), int(sorted_idx[run[-1]]) + 1
            out[order[run]] = rows.read(lo, hi)
    return out


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return as_tensor(x, device)


def _rows(x: torch.Tensor, y: torch.Tensor | None, idx: torch.Tensor) -> Batch:
    return torch.index_select(x, 0, idx), torch.index_select(y, 0, idx) if y is not None else None


@dataclass
class DeviceBatches:
    """The whole split as one uint8 tensor on the device (labels too, when given)."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        perm = torch.randperm(len(self.x), generator=generator).to(self.x.device, non_blocking=True)
        for step in range(math.ceil(len(self.x) / batch_size)):
            yield _rows(self.x, self.y, perm[step * batch_size : (step + 1) * batch_size])

    def ordered(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self.x), batch_size):
            yield (
                self.x[start : start + batch_size],
                self.y[start : start + batch_size] if self.y is not None else None,
            )

    def take(self, index: np.ndarray) -> Batch:
        return _rows(self.x, self.y, torch.from_numpy(index).to(self.x.device))


class _Slot:
    """A reusable host buffer (pinned on CUDA) with ``front`` spare rows before the data, where
    the CPU path puts the rows carried over from the previous buffer; ``done`` marks the end of
    its last copy to the GPU."""

    def __init__(self, rows: int, row_shape: tuple[int, ...], pinned: bool, front: int = 0) -> None:
        self.front = front
        self.x = torch.empty((front + rows, *row_shape), dtype=torch.uint8, pin_memory=pinned)
        self.y = torch.empty(front + rows, dtype=torch.int64, pin_memory=pinned)
        self.done: torch.cuda.Event | None = None

    def wait(self) -> None:
        if self.done is not None:
            self.done.synchronize()  # the previous copy out of this pinned buffer has finished


class StreamBatches:
    """The split read from its file in shuffled blocks, a buffer at a time (see module doc)."""

    def __init__(self, rows: Rows, y: np.ndarray | None, device: torch.device, buffer_bytes: int) -> None:
        self.rows, self.y, self.device = rows, y, device
        self.block_rows = rows_per_block(rows.row_bytes, min(BLOCK_BYTES, max(buffer_bytes // 4, 1)))
        self.blocks_per_buffer = max(1, buffer_bytes // (self.block_rows * rows.row_bytes))
        self.buffer_rows = min(self.block_rows * self.blocks_per_buffer, len(rows))
        self.slots: dict[
            tuple[int, int], _Slot
        ] = {}  # made on first use: an evaluation-only source holds one small slot
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aepipe-read")

    def __len__(self) -> int:
        return len(self.rows)

    def _slot(self, index: int, rows: int, front: int = 0) -> _Slot:
        slot = self.slots.get((index, front))
        if slot is None or slot.x.shape[0] - front < rows:
            slot = self.slots[(index, front)] = _Slot(
                rows, self.rows.row_shape, self.device.type == "cuda", front
            )
        return slot

    def _fill(
        self, slot: _Slot, start: int, stop: int | None = None, blocks: list[int] | None = None
    ) -> tuple[_Slot, int]:
        """Read rows ``[start, stop)`` or whole ``blocks`` into the slot after its front rows."""
        slot.wait()
        if blocks:
            spans = [(b * self.block_rows, min((b + 1) * self.block_rows, len(self.rows))) for b in blocks]
        elif stop is not None:
            spans = [(start, stop)]
        else:
            raise ValueError("_fill reads rows [start, stop) or whole blocks: give stop or blocks")
        pos = slot.front
        for lo, hi in spans:
            self.rows.read(lo, hi, slot.x.numpy()[pos : pos + hi - lo])
            if self.y is not None:
                slot.y.numpy()[pos : pos + hi - lo] = self.y[lo:hi]
            pos += hi - lo
        return slot, pos - slot.front

    def _upload(self, slot: _Slot, start: int, stop: int) -> Batch:
        """Rows of the slot on the device: one (async, pinned) copy on CUDA, the slot itself on the CPU."""
        x = slot.x[start:stop].to(self.device, non_blocking=True)
        y = slot.y[start:stop].to(self.device, non_blocking=True) if self.y is not None else None
        if self.device.type == "cuda":
            slot.done = torch.cuda.Event()
            slot.done.record()
        return x, y

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(math.ceil(len(self.rows) / self.block_rows), generator=generator).tolist()
        groups = [order[i : i + self.blocks_per_buffer] for i in range(0, len(order), self.blocks_per_buffer)]
        in_slot = self.device.type == "cpu"  # carried rows are written into the slot: no copy of the buffer
        slots = [self._slot(i, self.buffer_rows, batch_size if in_slot else 0) for i in range(2)]
        if not groups:
            return
        pending = self.reader.submit(self._fill, slots[0], 0, blocks=groups[0])
        carry_x: torch.Tensor | None = None
        carry_y: torch.Tensor | None = None
        for g in range(len(groups)):
            slot, count = pending.result()
            kept = len(carry_x) if carry_x is not None else 0
            if in_slot:
                if carry_x is not None and kept:
                    slot.x[slot.front - kept : slot.front] = carry_x
                    if self.y is not None and carry_y is not None:
                        slot.y[slot.front - kept : slot.front] = carry_y
                x, y = self._upload(slot, slot.front - kept, slot.front + count)
            else:
                x, y = self._upload(slot, 0, count)
                if carry_x is not None and kept:
                    x, y = (
                        torch.cat([carry_x, x]),
                        torch.cat([carry_y, y]) if y is not None and carry_y is not None else None,
                    )
            if g + 1 < len(groups):  # the reader fills the other slot while this one trains
                pending = self.reader.submit(self._fill, slots[(g + 1) % 2], 0, blocks=groups[g + 1])
            perm = torch.randperm(len(x), generator=generator).to(self.device, non_blocking=True)
            full = len(x) if g == len(groups) - 1 else len(x) // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield _rows(x, y, perm[start : start + batch_size])
            carry_x, carry_y = _rows(x, y, perm[full:])

    def ordered(self, batch_size: int) -> Iterator[Batch]:
        """Batches in file order, read a block at a time; on the CPU each is a view of a reused
        buffer, valid until the next one is requested (evaluation consumes it at once)."""
        per_fill = max(1, min(self.block_rows, len(self.rows)) // batch_size) * batch_size
        slot = self._slot(2, per_fill)
        for lo in range(0, len(self.rows), per_fill):
            hi = min(lo + per_fill, len(self.rows))
            self._fill(slot, lo, hi)
            x, y = self._upload(slot, 0, hi - lo)
            for b in range(0, len(x), batch_size):
                yield x[b : b + batch_size], y[b : b + batch_size] if y is not None else None

    def take(self, index: np.ndarray) -> Batch:
        x = to_device(take_rows(self.rows, index), self.device)
        return x, to_device(self.y[index], self.device) if self.y is not None else None


Source = DeviceBatches | StreamBatches


def choose_mode(mode: str, nbytes: int, device: torch.device) -> str:
    """``auto`` -> ``memory`` when ``nbytes`` fit in ``MEMORY_SHARE`` of the free memory."""
    if mode != "auto":
        return mode
    return "memory" if nbytes <= MEMORY_SHARE * available_memory(device) else "stream"


def resident(rows: Rows, device: torch.device) -> torch.Tensor:
    """All rows as one uint8 tensor on ``device``; file rows go to a GPU block by block, so the
    host never holds the whole split."""
    if isinstance(rows, ArrayRows):
        return to_device(rows.x, device)
    if device.type == "cpu":
        return torch.from_numpy(rows.read(0, len(rows)))
    out = torch.empty(rows.shape, dtype=torch.uint8, device=device)
    for lo, block in rows.blocks(rows_per_block(rows.row_bytes)):
        out[lo : lo + len(block)].copy_(torch.from_numpy(block))  # synchronous: the block buffer is reused
    return out


def make_source(
    x: np.ndarray | Rows, y: np.ndarray | None, mode: str, device: torch.device, buffer_bytes: int
) -> Source:
    rows = as_rows(x)
    if mode == "memory":
        return DeviceBatches(resident(rows, device), to_device(y, device) if y is not None else None)
    return StreamBatches(rows, y, device, buffer_bytes)
