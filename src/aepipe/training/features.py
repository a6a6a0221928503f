"""Frozen-encoder features: inference mode, large batches, eval-mode norm layers.

``extract_to_npy`` streams a split of any size: blocks of rows are read from x.npy with plain
file reads and the features appended to the output file, so memory does not grow with the
split. On CUDA it runs under bf16 autocast with channels_last (features are stored as float32).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from aepipe.data.blockio import NpyRows, NpyWriter, rows_per_block
from aepipe.models.base import AutoEncoder
from aepipe.training.device import (
    PROGRESS_DELAY_S,
    autocast,
    configure_backends,
    progress_enabled,
    wants_channels_last,
)


def as_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor on ``device``; read-only input (a memmap slice) is copied, never aliased."""
    x = np.ascontiguousarray(x)
    return torch.from_numpy(x if x.flags.writeable else x.copy()).to(device)


def _batches(x: np.ndarray | NpyRows, batch_size: int) -> Iterator[np.ndarray]:
    """Blocks of whole batches from an array or from file rows (one reused read buffer)."""
    if isinstance(x, NpyRows):
        per_read = max(1, rows_per_block(x.row_bytes) // batch_size) * batch_size
        for _, block in x.blocks(per_read):
            for start in range(0, len(block), batch_size):
                yield block[start : start + batch_size]
    else:
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size]


@torch.inference_mode()
def _encode(model: AutoEncoder, xb_u8: np.ndarray, device: torch.device, channels_last: bool) -> np.ndarray:
    xb = as_tensor(xb_u8, device).float().div_(255.0)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(device):
        return model.features(xb).float().cpu().numpy()


def _prepare(model: AutoEncoder, device: torch.device) -> bool:
    configure_backends(device)
    model.eval().to(device)
    channels_last = wants_channels_last("auto", device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return channels_last


def extract_features(
    model: AutoEncoder,
    x: np.ndarray | NpyRows,
    device: torch.device,
    batch_size: int = 1024,
    desc: str = "extract",
) -> np.ndarray:
    """Encoder features in eval mode (norm layers frozen, VAE mean not a sample), in memory."""
    channels_last = _prepare(model, device)
    total = len(x)
    out = [
        _encode(model, xb, device, channels_last)
        for xb in tqdm(
            _batches(x, batch_size),
            total=-(-total // batch_size),
            desc=desc,
            unit="batch",
            disable=not progress_enabled(),
            delay=PROGRESS_DELAY_S,
        )
    ]
    if not out:
        raise ValueError("extract_features got no images")
    return np.concatenate(out)


def extract_to_npy(
    model: AutoEncoder,
    x: np.ndarray | NpyRows,
    device: torch.device,
    path: str | os.PathLike[str],
    batch_size: int = 1024,
    desc: str = "extract",
) -> tuple[int, int]:
    """Features of every row of ``x`` written to ``path`` (float32 .npy) batch by batch; returns its shape."""
    channels_last = _prepare(model, device)
    writer = None
    try:
        for xb in tqdm(
            _batches(x, batch_size),
            total=-(-len(x) // batch_size),
            desc=desc,
            unit="batch",
            disable=not progress_enabled(),
            delay=PROGRESS_DELAY_S,
        ):
            feats = _encode(model, xb, device, channels_last)
            if writer is None:
                writer = NpyWriter(path, (len(x), feats.shape[1]), np.float32)
            writer.append(feats)
        if writer is None:
            raise ValueError("extract_to_npy got no images")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.fh.close()
        raise
    return len(x), int(writer.shape[1])
