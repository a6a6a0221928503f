"""Pieces shared by the heads trained by gradient descent (mlp, finetune): batch order, early
stopping on validation accuracy, and batched accuracy."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

TRAIN_ACCURACY_SAMPLE = 5000  # the per-epoch training accuracy (a curve, not a selection criterion) uses this many


def epoch_batches(n: int, batch_size: int, min_steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
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
def accuracy(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Share of ``x`` whose argmax logit is ``y``; ``x`` is batched through ``logits_fn``."""
    if len(x) == 0:
        return float("nan")
    hits = 0
    for start in range(0, len(x), batch_size):
        pred = logits_fn(x[start : start + batch_size]).argmax(dim=1)
        hits += int((pred == y[start : start + batch_size]).sum())
    return hits / len(x)
