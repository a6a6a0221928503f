"""Convolutional autoencoder: the shared backbone, a linear bottleneck, plain pixel MSE.

The other convolutional variants subclass it and change only what they add: the input they
see while training (``forward``), the code (``code``) or the loss.
"""

from __future__ import annotations

import torch

from aepipe.models.backbone import ConvDecoder, ConvEncoder
from aepipe.models.base import AutoEncoder, ModelSpec


class ConvAutoEncoder(AutoEncoder):
    def __init__(self, spec: ModelSpec, code_dim: int | None = None) -> None:
        """``code_dim``: width of the encoder's linear output when it is not the code itself
        (a VAE emits mean and log-variance)."""
        super().__init__(spec)
        c, h, w = spec.input_shape
        self.encoder = ConvEncoder(
            c, h, w, spec.width, spec.depth, code_dim or spec.latent_dim, spec.pool_grid
        )
        self.decoder = ConvDecoder(c, h, w, spec.width, spec.depth, spec.latent_dim)

    def code(self, raw: torch.Tensor) -> torch.Tensor:
        """The latent code from the encoder's linear output (identity here)."""
        return raw

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(self.encoder(self.normalize(x)))

    def encode_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, pooled = self.encoder.pooled(self.normalize(x))
        return self.code(raw), pooled

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.decoder(z)
        return logits
