"""Classifier heads on top of encoder features: head name -> module (what a saved head loads as).

Each head's trainer lives in the training layer (``aepipe.training.trainers.TRAINERS``), so this
module, which loading and serving a model needs, never imports a training loop. Every head
standardises its input with the training split's feature statistics (buffers), so the saved
head is self-contained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from aepipe.options import ENCODER_HEADS


class Standardized(nn.Module):
    """Holds the feature mean/scale of the training split and applies them."""

    feat_mean: torch.Tensor  # buffers, registered in __init__
    feat_scale: torch.Tensor

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_scale", torch.ones(in_dim))

    def set_stats(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit the statistics on ``features`` (constant columns keep scale 1); return them."""
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        scale = np.where(std < 1e-8, 1.0, std)
        with torch.no_grad():
            self.feat_mean.copy_(torch.from_numpy(mean).float())
            self.feat_scale.copy_(torch.from_numpy(scale).float())
        return mean, scale

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feat_mean) / self.feat_scale


class LinearClassifier(Standardized):
    """Standardise features (train-split statistics) then one linear layer: a linear probe."""

    def __init__(self, in_dim: int, n_classes: int, **_: Any) -> None:
        super().__init__(in_dim)
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.linear(self.standardize(features))
        return logits


class MLPClassifier(Standardized):
    """Standardise, then ReLU hidden layers with dropout, then a linear output."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: list[int] | tuple[int, ...] = (256,),
        dropout: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__(in_dim)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, n_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.mlp(self.standardize(features))
        return logits


@dataclass(frozen=True)
class Head:
    module: type[nn.Module]
    trains_encoder: bool = False


# The names are aepipe.options.HEAD_NAMES and those of aepipe.training.trainers.TRAINERS
# (tests/test_layers.py checks that the three agree).
_MODULES: dict[str, type[nn.Module]] = {
    "linear": LinearClassifier,
    "mlp": MLPClassifier,
    "finetune": LinearClassifier,
    "semisup": LinearClassifier,
}
HEADS: dict[str, Head] = {
    name: Head(module, trains_encoder=name in ENCODER_HEADS) for name, module in _MODULES.items()
}
