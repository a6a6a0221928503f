"""Denoising autoencoder: corrupt the input while training, reconstruct the clean image.

Noise acts only in training mode, so features and reconstructions at eval time are
deterministic and see the clean image.
"""

from __future__ import annotations

import torch

from aepipe.models.base import ModelSpec
from aepipe.models.conv import ConvAutoEncoder
from aepipe.options import DenoisingOptions


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """A noisy copy of images in [0, 1], still in [0, 1]."""
    if noise == "gaussian":
        return (x + level * torch.randn_like(x)).clamp_(0.0, 1.0)
    hit = torch.rand_like(x) < level
    if noise == "masking":
        return x.masked_fill(hit, 0.0)
    salt = (torch.rand_like(x) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


class DenoisingAutoEncoder(ConvAutoEncoder):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = DenoisingOptions.model_validate(spec.options)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            x = corrupt(x, self.options.noise, self.options.level)
        return super().forward(x)  # the base loss compares with the clean batch it is given
