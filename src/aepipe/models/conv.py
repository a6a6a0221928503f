"""Convolutional autoencoder: the shared backbone, a linear bottleneck, plain pixel MSE."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from aepipe.models.backbone import ConvDecoder, ConvEncoder
from aepipe.models.base import AutoEncoder, ModelSpec


class ConvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConvAutoEncoder(AutoEncoder):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c, h, w = spec.input_shape
        self.encoder = ConvEncoder(c, h, w, spec.width, spec.depth, spec.latent_dim)
        self.decoder = ConvDecoder(c, h, w, spec.width, spec.depth, spec.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.normalize(x))

    def encode_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.pooled(self.normalize(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
