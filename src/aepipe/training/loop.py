"""Pieces shared by the heads trained by gradient descent (mlp, finetune): batch order, early
stopping on validation accuracy, batched accuracy, and per-epoch checkpoints (a killed run
resumes at the epoch after its last checkpoint, with the same weights, optimizer, early-stopping
state and RNG streams, so it ends exactly where an uninterrupted run ends)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from aepipe.errors import ModelError
from aepipe.training.checkpoint import Checkpointer, capture_rng, cpu_state, restore_rng

TRAIN_ACCURACY_SAMPLE = (
    5000  # the per-epoch training accuracy (a curve, not a selection criterion) uses this many
)


def epoch_batches(
    n: int, batch_size: int, min_steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Index batches for one epoch: a seeded permutation, repeated until there are at least
    ``min_steps`` batches, so 10 labels per class still give the optimiser real work per epoch."""
    steps = max(math.ceil(n / batch_size), min_steps)
    reps = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])
    for step in range(steps):
        batch = order[step * batch_size : (step + 1) * batch_size]
        if len(batch):
            yield batch


class EarlyStopping:
    """Keeps a copy of the best weights by validation accuracy and says when to stop."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = -1.0
        self.best_epoch = 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_accuracy: float, module: nn.Module) -> bool:
        """Record this epoch; True when ``patience`` epochs passed without improvement."""
        if val_accuracy > self.best:
            self.best, self.best_epoch = val_accuracy, epoch
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        return epoch - self.best_epoch >= self.patience

    def restore(self, module: nn.Module) -> None:
        if self.state is not None:
            module.load_state_dict(copy.deepcopy(self.state))


@torch.inference_mode()
def accuracy(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
) -> float:
    """Share of ``x`` whose argmax logit is ``y``; ``x`` is batched through ``logits_fn``."""
    if len(x) == 0:
        return float("nan")
    hits = 0
    for start in range(0, len(x), batch_size):
        pred = logits_fn(x[start : start + batch_size]).argmax(dim=1)
        hits += int((pred == y[start : start + batch_size]).sum())
    return hits / len(x)


class EpochCheckpoint:
    """The checkpoint of a head's epoch loop: ``resume`` before the loop, ``save`` after each epoch."""

    def __init__(
        self,
        checkpoint: Checkpointer | None,
        module: nn.Module,
        opt: torch.optim.Optimizer,
        generator: torch.Generator,
        stopper: EarlyStopping,
    ) -> None:
        self.checkpoint, self.module, self.opt, self.generator, self.stopper = (
            checkpoint,
            module,
            opt,
            generator,
            stopper,
        )

    def resume(self) -> tuple[int, list[dict[str, Any]], bool]:
        """(epochs done, curve so far, whether early stopping had already ended the run)."""
        state = self.checkpoint.load() if self.checkpoint is not None else None
        if state is None or self.checkpoint is None:
            return 0, [], False
        with self.checkpoint.applying():
            self.module.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            restore_rng(state["rng"], self.generator)
            self.stopper.best, self.stopper.best_epoch, self.stopper.state = (
                state["best"],
                state["best_epoch"],
                state["best_state"],
            )
            self.checkpoint.resumed_from = state["epoch"]
            return state["epoch"], state["curve"], state["stopped"]

    def save(self, epoch: int, curve: list[dict[str, Any]], stopped: bool) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.save(
            {
                "epoch": epoch,
                "model": cpu_state(self.module),
                "optimizer": self.opt.state_dict(),
                "rng": capture_rng(self.generator),
                "best": self.stopper.best,
                "best_epoch": self.stopper.best_epoch,
                "best_state": self.stopper.state,
                "curve": curve,
                "stopped": stopped,
            }
        )


def check_finite(
    total: torch.Tensor, what: str, where: str, checkpoint: Checkpointer | None, fix: str
) -> None:
    """Raise a ModelError naming ``where`` when a summed loss is NaN/inf (one host read)."""
    value = float(total)
    if not math.isfinite(value):
        kept = (
            f"; the last good checkpoint is kept in {checkpoint.directory}"
            if checkpoint is not None and checkpoint.path.is_file()
            else ""
        )
        raise ModelError(f"{what} diverged: the training loss became {value} in {where}{kept}; {fix}")


def sgd_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """One optimiser step on ``loss``; returns it detached (to sum on the device)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def fit_epochs(
    module: nn.Module,
    opt: torch.optim.Optimizer,
    generator: torch.Generator,
    max_epochs: int,
    patience: int,
    checkpoint: Checkpointer | None,
    train_epoch: Callable[[int], torch.Tensor],
    evaluate: Callable[[int], dict[str, Any]],
    what: str,
    fix: str,
) -> tuple[EarlyStopping, list[dict[str, Any]]]:
    """The epoch loop of a head: ``train_epoch(epoch)`` (returns its summed loss, checked for
    NaN/inf), ``evaluate(epoch)`` (a curve row with ``val_accuracy``), early stopping, and a
    checkpoint after every epoch, from which a re-run resumes. Ends with the best weights loaded."""
    stopper = EarlyStopping(patience)
    saver = EpochCheckpoint(checkpoint, module, opt, generator, stopper)
    done, curve, stopped = saver.resume()
    for epoch in range(done + 1, max_epochs + 1 if not stopped else done + 1):
        check_finite(train_epoch(epoch), what, f"epoch {epoch}", checkpoint, fix)
        curve.append(evaluate(epoch))
        stop = stopper.update(epoch, curve[-1]["val_accuracy"], module)
        saver.save(epoch, curve, stop)
        if stop:
            break
    stopper.restore(module)
    return stopper, curve
