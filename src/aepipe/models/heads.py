"""Classifier heads on top of encoder features: head name -> (module, trainer).

The trainer is named by a dotted path and imported only when used, so validating params does
not pull in every training loop. Every head standardises its input with the training split's
feature statistics (buffers), so the saved head is self-contained.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from aepipe.config import ClassifierConfig
    from aepipe.models.base import AutoEncoder
    from aepipe.training.checkpoint import Checkpointer


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


@dataclass
class HeadData:
    """What a head trainer gets from the train stage. Heads on frozen features use the features;
    ``finetune`` and ``semisup`` also read the images (``data_dir``, rows ``picked`` of the train
    split) and the pretrained autoencoder (``model_dir``)."""

    f_train: np.ndarray
    y_train: np.ndarray
    f_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    cfg: ClassifierConfig
    seed: int
    device: torch.device = torch.device("cpu")
    data_dir: Path | None = None
    model_dir: Path | None = None
    picked: np.ndarray | None = None
    checkpoint: Checkpointer | None = None  # heads trained by gradient descent save every epoch here


@dataclass
class FitResult:
    """What a head trainer returns. ``info`` is JSON and goes into the head's spec;
    ``options`` are the module's constructor arguments; ``autoencoder`` is set by heads that
    train the encoder too (finetune), and is saved next to the head."""

    module: nn.Module
    val_accuracy: float
    curve: list[dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    autoencoder: AutoEncoder | None = None


@dataclass(frozen=True)
class Head:
    module: type[nn.Module]
    trainer: str  # "module:function"
    trains_encoder: bool = False

    def fit_fn(self) -> Callable[[HeadData], FitResult]:
        mod, _, fn = self.trainer.partition(":")
        trainer: Callable[[HeadData], FitResult] = getattr(importlib.import_module(mod), fn)
        return trainer


HEADS: dict[str, Head] = {
    "linear": Head(LinearClassifier, "aepipe.training.heads:fit_linear"),
    "mlp": Head(MLPClassifier, "aepipe.training.heads:fit_mlp"),
    "finetune": Head(LinearClassifier, "aepipe.training.finetune:fit_finetune", trains_encoder=True),
    "semisup": Head(LinearClassifier, "aepipe.training.semisup:fit_semisup", trains_encoder=True),
}
