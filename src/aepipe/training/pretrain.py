"""Autoencoder pretraining loop.

Data stays a uint8 tensor (on the device when it fits); batches are index slices of a seeded
permutation, so there is no per-sample Dataset/DataLoader overhead. Losses are accumulated on
the device and read back once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from aepipe.config import PretrainConfig
from aepipe.errors import ModelError
from aepipe.models.base import AutoEncoder
from aepipe.training.device import progress_enabled


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)


def as_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


@torch.inference_mode()
def evaluate_loss(
    model: AutoEncoder, x_u8: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None
) -> tuple[float, dict[str, float]]:
    model.eval()
    total, parts_total, n = torch.zeros((), device=x_u8.device), {}, 0
    for start in range(0, len(x_u8), batch_size):
        xb = x_u8[start : start + batch_size].float().div_(255.0)
        yb = labels[start : start + batch_size] if labels is not None else None
        loss, parts = model.loss(xb, model(xb), yb)
        total += loss.detach() * len(xb)
        for k, v in parts.items():
            parts_total[k] = parts_total.get(k, 0.0) + v.detach() * len(xb)
        n += len(xb)
    return float(total) / max(n, 1), {k: float(v) / max(n, 1) for k, v in parts_total.items()}


def label_tensor(model: AutoEncoder, labels: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """Labels for a variant that trains with them (-1 = unlabelled), None for every other."""
    if not model.uses_labels:
        return None
    if labels is None:
        raise ModelError(f"model.name {model.spec.name!r} trains with labels, but none were passed to pretraining")
    return as_tensor(labels.astype(np.int64), device)


def pretrain(
    model: AutoEncoder,
    x_train: np.ndarray,
    x_val: np.ndarray,
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None = None,
    y_train: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> list[EpochLog]:
    """Fit ``model`` on ``x_train``; labels (-1 = unlabelled) reach only variants that use them."""
    model.to(device)
    xt, xv = as_tensor(x_train, device), as_tensor(x_val, device)
    yt, yv = label_tensor(model, y_train, device), label_tensor(model, y_val, device)
    # A small labelled subset is oversampled into every batch (see AutoEncoder.labelled_per_batch).
    labelled = torch.nonzero(yt >= 0).flatten() if yt is not None and bool((yt < 0).any()) else None
    if labelled is not None and len(labelled) == 0:
        raise ModelError(f"model.name {model.spec.name!r} trains with labels, but every training label is -1")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    n, bs = len(xt), cfg.batch_size
    steps = math.ceil(n / bs)
    history: list[EpochLog] = []
    bar = tqdm(range(cfg.epochs), desc="pretrain", unit="epoch", disable=not progress_enabled())
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=generator).to(device)
        total, seen = torch.zeros((), device=device), 0
        for step in range(steps):
            idx = perm[step * bs : (step + 1) * bs]
            if labelled is not None and model.labelled_per_batch:
                extra = torch.randint(len(labelled), (model.labelled_per_batch,), generator=generator).to(device)
                idx = torch.cat([idx, labelled[extra]])
            xb = xt[idx].float().div_(255.0)
            loss, _ = model.loss(xb, model(xb), yt[idx] if yt is not None else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
        sched.step()
        train_loss = float(total) / seen
        if not math.isfinite(train_loss):
            raise ModelError(f"pretraining diverged: loss is {train_loss} in epoch {epoch + 1}; lower pretrain.lr or set pretrain.grad_clip")
        val_loss, parts = evaluate_loss(model, xv, max(bs, 256), yv)
        log = EpochLog(epoch + 1, train_loss, val_loss, time.perf_counter() - t0, parts)
        history.append(log)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if on_epoch is not None:
            on_epoch(log)
    return history


@torch.inference_mode()
def extract_features(model: AutoEncoder, x: np.ndarray, device: torch.device, batch_size: int = 1024, desc: str = "extract") -> np.ndarray:
    """Encoder features in eval mode (norm layers frozen, VAE mean not a sample)."""
    model.eval().to(device)
    out = []
    for start in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", disable=not progress_enabled()):
        xb = as_tensor(x[start : start + batch_size], device).float().div_(255.0)
        out.append(model.features(xb).float().cpu().numpy())
    if not out:
        raise ValueError("extract_features got no images")
    return np.concatenate(out)
