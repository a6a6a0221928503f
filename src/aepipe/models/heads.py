"""Classifier heads on top of encoder features: head name -> (module, trainer).

The trainer is named by a dotted path and imported only when used, so validating params does
not pull in every training loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class LinearClassifier(nn.Module):
    """Standardise features (train-split statistics) then one linear layer: a linear probe."""

    def __init__(self, in_dim: int, n_classes: int, **_: Any) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_scale", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.feat_mean) / self.feat_scale)


@dataclass(frozen=True)
class Head:
    module: type[nn.Module]
    trainer: str  # "module:function"
    trains_encoder: bool = False

    def fit_fn(self) -> Callable[..., Any]:
        mod, _, fn = self.trainer.partition(":")
        return getattr(importlib.import_module(mod), fn)


HEADS: dict[str, Head] = {
    "linear": Head(LinearClassifier, "aepipe.training.heads:fit_linear"),
}
