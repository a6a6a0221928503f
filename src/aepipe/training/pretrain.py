"""Autoencoder pretraining loop.

Batches come from :mod:`aepipe.training.batches` as uint8 tensors already on the device (the
split resident there, or streamed from x.npy when it does not fit), so there is no per-sample
Dataset/DataLoader. The device's fast paths (``aepipe.training.device.FAST_PATHS``) decide the
rest: on CUDA bf16 autocast, channels_last and cuDNN autotuning; on CPU fp32 with channels_last
and a thread count capped at the CPUs the process may use. With ``channels_last: false`` and a
pinned thread count the CPU loop is a plain textbook loop bit for bit. The inner loop never waits for
the device: losses are summed on the device and read back every ``pretrain.sync_every`` steps
(the divergence check) and once per epoch. Each epoch ends with a checkpoint (model, optimizer,
scheduler, every RNG, the curve so far), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aepipe import signals
from aepipe.config import PretrainConfig
from aepipe.errors import ModelError
from aepipe.models.base import AutoEncoder
from aepipe.training.batches import Batch, Rows, Source, choose_mode, make_source
from aepipe.training.checkpoint import Checkpointer, capture_rng, cpu_state, restore_rng
from aepipe.training.device import (
    PROGRESS_DELAY_S,
    autocast,
    configure_backends,
    progress_enabled,
    threads_set,
    wants_channels_last,
    wants_compile,
)
from aepipe.training.distributed import DistEnv
from aepipe.training.features import as_tensor, extract_features
from aepipe.training.loop import check_finite

__all__ = ["EpochLog", "as_tensor", "evaluate_loss", "extract_features", "label_tensor", "pretrain"]


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)


def to_float(xb: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> float in [0, 1] on its device (NHWC when asked)."""
    x = xb.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.inference_mode()
def evaluate_loss(
    model: AutoEncoder,
    x_u8: torch.Tensor | Source,
    batch_size: int,
    labels: torch.Tensor | None = None,
    channels_last: bool = False,
) -> tuple[float, dict[str, float]]:
    """Mean loss (and its parts) in eval mode over a uint8 tensor or a batch source."""
    model.eval()
    batches = x_u8.ordered(batch_size) if hasattr(x_u8, "ordered") else _slices(x_u8, labels, batch_size)
    device = next(model.parameters()).device
    parts_total: dict[str, torch.Tensor] = {}
    total, n = torch.zeros((), device=device), 0
    for xb_u8, yb in batches:
        xb = to_float(xb_u8, channels_last)
        with autocast(device):
            loss, parts = model.loss(xb, model(xb), yb)
        total += loss.detach().float() * len(xb)
        for k, v in parts.items():
            parts_total[k] = parts_total.get(k, 0.0) + v.detach().float() * len(xb)
        n += len(xb)
    return float(total) / max(n, 1), {k: float(v) / max(n, 1) for k, v in parts_total.items()}


def _slices(x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size] if y is not None else None


def label_tensor(model: AutoEncoder, labels: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """Labels for a variant that trains with them (-1 = unlabelled), None for every other."""
    labels = label_array(model, labels)
    return None if labels is None else as_tensor(labels, device)


def label_array(model: AutoEncoder, labels: np.ndarray | None) -> np.ndarray | None:
    if not model.uses_labels:
        return None
    if labels is None:
        raise ModelError(
            f"model.name {model.spec.name!r} trains with labels, but none were passed to pretraining"
        )
    return np.asarray(labels, dtype=np.int64)


def pretrain(
    model: AutoEncoder,
    x_train: np.ndarray | Rows,
    x_val: np.ndarray | Rows,
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None = None,
    y_train: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    checkpoint: Checkpointer | None = None,
    dist: DistEnv = DistEnv(),
) -> list[EpochLog]:
    """Fit ``model`` on ``x_train`` (uint8 N×C×H×W arrays, or file rows to stream); labels
    (-1 = unlabelled) reach only variants that use them. Resumes from ``checkpoint`` when it
    holds one; under torchrun (``dist``) each rank trains on its slice of every global batch.
    ``cfg.threads`` applies for the duration of the call."""
    with threads_set(cfg.threads):
        return _pretrain(
            model, x_train, x_val, cfg, generator, device, on_epoch, y_train, y_val, checkpoint, dist
        )


def _pretrain(
    model: AutoEncoder,
    x_train: np.ndarray | Rows,
    x_val: np.ndarray | Rows,
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None,
    y_train: np.ndarray | None,
    y_val: np.ndarray | None,
    checkpoint: Checkpointer | None,
    dist: DistEnv,
) -> list[EpochLog]:
    configure_backends(device)
    channels_last = wants_channels_last(cfg.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    yt, yv = label_array(model, y_train), label_array(model, y_val)
    mode = choose_mode(cfg.data_mode, _nbytes(x_train) + _nbytes(x_val), device)
    train = make_source(x_train, yt, mode, device, cfg.stream_buffer_mb << 20)
    val = make_source(x_val, yv, mode, device, cfg.stream_buffer_mb << 20)
    labelled = _labelled(model, yt)
    extra_x, extra_y = (
        train.take(labelled) if labelled is not None and model.labelled_per_batch else (None, None)
    )

    net = dist.wrap(model, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    history, partial = _resume(checkpoint, dist, model, opt, sched, generator, on_epoch)
    steps, bs = math.ceil(len(train) / cfg.batch_size), cfg.batch_size
    # compile: auto weighs the compilation against the steps left to run (FAST_PATHS)
    forward = (
        torch.compile(net) if wants_compile(cfg.compile, device, steps * (cfg.epochs - len(history))) else net
    )
    bar = tqdm(
        range(len(history), cfg.epochs),
        desc="pretrain",
        unit="epoch",
        disable=not progress_enabled() or not dist.is_main,
        delay=PROGRESS_DELAY_S,
    )
    with signals.deferred():  # SIGTERM stops the loop between two steps, never inside one
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            total, seen, window = torch.zeros((), device=device), 0, 0
            epoch_rng, skip = generator.get_state(), 0
            if partial is not None:  # resume inside the epoch that a SIGTERM interrupted
                epoch_rng, skip = partial["epoch_rng"], partial["step"]
                generator.set_state(epoch_rng)
                total += partial["total"].to(device)
                seen, window, t0 = partial["seen"], partial["window"], t0 - partial["seconds"]
            for step, (xb_u8, yb) in enumerate(train.epoch(bs, generator)):
                if extra_x is not None:
                    extra = torch.randint(len(extra_x), (model.labelled_per_batch,), generator=generator).to(
                        device, non_blocking=True
                    )
                if step < skip:  # replayed: the same draws from the batch-order generator, no training
                    continue
                if partial is not None:  # every RNG as it was when the SIGTERM'd run stopped here
                    restore_rng(partial["rng"])
                    partial = None
                elif signals.requested():
                    mid = {"epoch_rng": epoch_rng, "step": step, "total": total.detach().cpu()}
                    mid |= {"seen": seen, "window": window, "seconds": time.perf_counter() - t0}
                    _save_mid_epoch(checkpoint, dist, model, opt, sched, generator, history, mid)
                    signals.stop()
                if extra_x is not None:
                    xb_u8 = torch.cat([xb_u8, torch.index_select(extra_x, 0, extra)])
                    yb = (
                        torch.cat([yb, torch.index_select(extra_y, 0, extra)])
                        if yb is not None and extra_y is not None
                        else None
                    )
                if (
                    not dist.enabled or len(xb_u8) >= 2 * dist.world
                ):  # a last batch too small to split over the ranks is skipped
                    seen += _step(model, forward, opt, cfg.grad_clip, dist, xb_u8, yb, total, channels_last)
                if (step + 1) % cfg.sync_every == 0 or step + 1 == steps:
                    where = f"epoch {epoch + 1}, steps {window + 1}-{step + 1} of {steps}"
                    check_finite(
                        dist.all_sum(total),
                        "pretraining",
                        where,
                        checkpoint,
                        "lower pretrain.lr or set pretrain.grad_clip",
                    )
                    window = step + 1
            sched.step()
            train_loss = float(dist.all_sum(total)) / float(
                dist.all_sum(torch.tensor(float(seen), dtype=torch.float64, device=device))
            )
            val_loss, parts = (
                evaluate_loss(model, val, max(bs, 256), channels_last=channels_last)
                if dist.is_main
                else (float("nan"), {})
            )
            log = EpochLog(epoch + 1, train_loss, val_loss, time.perf_counter() - t0, parts)
            history.append(log)
            if checkpoint is not None and dist.is_main:
                checkpoint.save(_state(model, opt, sched, generator, history))
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if on_epoch is not None:
                on_epoch(log)
            if signals.requested():  # this epoch's checkpoint is written: stop before the next one
                signals.stop()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return history


def _step(
    model: AutoEncoder,
    forward: Callable[..., Any],
    opt: torch.optim.Optimizer,
    grad_clip: float | None,
    dist: DistEnv,
    xb_u8: torch.Tensor,
    yb: torch.Tensor | None,
    total: torch.Tensor,
    channels_last: bool,
) -> int:
    """One optimiser step on this rank's slice of a global batch; adds loss x rows to ``total``
    (on the device, no sync) and returns the rows."""
    global_n = len(xb_u8)
    xb_u8, yb = dist.shard(xb_u8), dist.shard(yb)
    xb = to_float(xb_u8, channels_last)
    with autocast(xb.device):
        loss, _ = model.loss(xb, forward(xb), yb)
    # Each rank's mean weighted by its share, so DDP's gradient average is the global batch mean.
    scaled = loss * (len(xb) * dist.world / global_n) if dist.enabled else loss
    opt.zero_grad(set_to_none=True)
    scaled.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    total += loss.detach().float() * len(xb)
    return len(xb)


def _nbytes(x: np.ndarray | Rows) -> int:
    return int(x.nbytes)


def _labelled(model: AutoEncoder, yt: np.ndarray | None) -> np.ndarray | None:
    """Positions of the labelled images when only some are (they are oversampled into every
    batch, see AutoEncoder.labelled_per_batch), else None."""
    if yt is None or not (yt < 0).any():
        return None
    labelled = np.flatnonzero(yt >= 0)
    if len(labelled) == 0:
        raise ModelError(f"model.name {model.spec.name!r} trains with labels, but every training label is -1")
    return labelled


def _state(
    model: AutoEncoder,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
    history: list[EpochLog],
) -> dict[str, Any]:
    return {
        "epoch": len(history),
        "model": cpu_state(model),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng(generator),
        "history": [asdict(h) for h in history],
    }


def _save_mid_epoch(
    checkpoint: Checkpointer | None,
    dist: DistEnv,
    model: AutoEncoder,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
    history: list[EpochLog],
    mid: dict[str, Any],
) -> None:
    """SIGTERM between two steps of an epoch: checkpoint the run as it stands, plus what it takes to
    resume at this very step (the epoch's batch-order state to replay the batches already trained,
    the partial loss sums, every other RNG). One process only: under torchrun each rank stops with
    the checkpoint of the last finished epoch, since the ranks are not stopped at one common step."""
    if checkpoint is None or dist.enabled:
        return
    state = _state(model, opt, sched, generator, history)
    state["partial"] = mid | {"rng": capture_rng()}
    checkpoint.save(state)
    print(
        f"aepipe: pretraining checkpointed in epoch {len(history) + 1} before step {mid['step'] + 1}"
        f" ({checkpoint.directory}); a re-run resumes there",
        file=sys.stderr,
        flush=True,
    )


def _resume(
    checkpoint: Checkpointer | None,
    dist: DistEnv,
    model: AutoEncoder,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
    on_epoch: Callable[[EpochLog], None] | None,
) -> tuple[list[EpochLog], dict[str, Any] | None]:
    """Load the last checkpoint into everything that trains; the epochs it holds are replayed to
    ``on_epoch`` so the new run's curve is complete. Every rank must see the same checkpoint.
    Also returns the mid-epoch position a SIGTERM'd run saved (None after a finished epoch)."""
    state = checkpoint.load() if checkpoint is not None else None
    low, high = dist.agree(state["epoch"] if state else 0)
    if low != high:
        raise ModelError(
            f"ranks found different checkpoints (epochs {low} to {high}) in "
            f"{checkpoint.directory if checkpoint else '?'}; "
            "put AEPIPE_CHECKPOINT_DIR on storage every node shares"
        )
    if not state:
        return [], None
    assert checkpoint is not None
    with checkpoint.applying():
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], generator)
        history = [EpochLog(**h) for h in state["history"]]
    checkpoint.resumed_from = len(history)
    for log in history:
        if on_epoch is not None:
            on_epoch(log)
    return history, state.get("partial")
