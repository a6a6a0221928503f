"""What a head trainer gets from the train stage (``HeadData``) and returns (``FitResult``).

The trainers themselves are ``aepipe.training.trainers.TRAINERS``; the head modules they fit are
``aepipe.models.heads``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from aepipe.config import ClassifierConfig
from aepipe.training.checkpoint import Checkpointer

if TYPE_CHECKING:
    from aepipe.models.base import AutoEncoder


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
