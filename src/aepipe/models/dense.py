"""Dense (MLP) autoencoder: the baseline that ignores image structure.

Sizes come from the shared ``model.width``/``model.depth`` so a sweep over them moves every
variant: hidden layer k has ``width * units_per_width / 2**k`` units. ``model.pool_grid`` does
not apply (there is no spatial map); multiscale features are every hidden layer plus the code.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from aepipe.models.base import AutoEncoder, ModelSpec
from aepipe.options import DenseOptions


def _layer(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class DenseAutoEncoder(AutoEncoder):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        opts = DenseOptions.model_validate(spec.options)
        pixels = math.prod(spec.input_shape)
        hidden = [max(spec.width * opts.units_per_width // 2**k, spec.latent_dim) for k in range(spec.depth)]
        sizes = [pixels, *hidden]
        self.hidden = nn.ModuleList([_layer(a, b) for a, b in pairwise(sizes)])
        self.bottleneck = nn.Linear(hidden[-1], spec.latent_dim)
        back = [spec.latent_dim, *hidden[::-1]]
        self.decoder = nn.Sequential(*[_layer(a, b) for a, b in pairwise(back)], nn.Linear(hidden[0], pixels))

    def encode_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, acts = self.normalize(x).flatten(1), []
        for layer in self.hidden:
            h = layer(h)
            acts.append(h)
        return self.bottleneck(h), torch.cat(acts, dim=1)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        flat: torch.Tensor = self.decoder(z)
        return flat.view(-1, *self.spec.input_shape)
