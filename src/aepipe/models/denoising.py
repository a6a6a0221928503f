"""Denoising autoencoder: corrupt the input while training, reconstruct the clean image.

Noise acts only in training mode, so features and reconstructions at eval time are
deterministic and see the clean image.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from aepipe.models.base import ModelSpec
from aepipe.models.conv import ConvAutoEncoder


class DenoisingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    noise: Literal["gaussian", "masking", "salt_pepper"] = Field(
        "gaussian",
        description="gaussian: add N(0, level^2); masking: zero a `level` share of pixels; salt_pepper: set "
        "a `level` share to 0 or 1",
    )
    level: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="noise std (gaussian) or share of corrupted pixels, in [0, 1] pixel units",
    )


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
