"""Shared convolutional backbone, so variants differ only in what they add on top.

Works for any input size: each stage halves H and W (rounding up) and the decoder mirrors the
exact sizes with ``output_padding``, so 8x8 digits, 28x28 MNIST and 32x32 CIFAR all fit.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def stage_sizes(size: int, depth: int) -> list[int]:
    sizes = [size]
    for _ in range(depth):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class ConvEncoder(nn.Module):
    """Stem + ``depth`` stride-2 stages + a linear bottleneck.

    ``forward`` returns the latent code; ``pooled`` also returns the spatially averaged
    activations of every stage, which a linear probe separates far better than the bottleneck
    alone (on digits: ~98.5% vs ~96% test accuracy with the same frozen encoder). Averaging over
    a ``pool_grid`` x ``pool_grid`` grid instead of the whole image keeps coarse layout (which
    stroke is where): on MNIST a random encoder's probe goes from 94.0% (grid 1) to 97.5% (grid 2).
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width_px: int,
        width: int,
        depth: int,
        out_dim: int,
        pool_grid: int = 1,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList([_block(in_channels, width, stride=1)])
        ch = width
        stage_channels = [width]
        for i in range(depth):
            nxt = width * 2 ** min(i + 1, 3)
            self.stages.append(_block(ch, nxt, stride=2))
            stage_channels.append(nxt)
            ch = nxt
        self.out_channels = ch
        self.pool_grid = pool_grid
        self.pooled_dim = sum(stage_channels) * pool_grid**2
        self.grid = (stage_sizes(height, depth)[-1], stage_sizes(width_px, depth)[-1])
        self.fc = nn.Linear(ch * self.grid[0] * self.grid[1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        code: torch.Tensor = self.fc(torch.flatten(x, 1))
        return code

    def pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent, concatenated per-stage average pools over a ``pool_grid`` grid)."""
        pools = []
        for stage in self.stages:
            x = stage(x)
            pools.append(nn.functional.adaptive_avg_pool2d(x, self.pool_grid).flatten(1))
        return self.fc(torch.flatten(x, 1)), torch.cat(pools, dim=1)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvDecoder(nn.Module):
    def __init__(
        self, out_channels: int, height: int, width_px: int, width: int, depth: int, in_dim: int
    ) -> None:
        super().__init__()
        hs, ws = stage_sizes(height, depth), stage_sizes(width_px, depth)
        chans = [width] + [width * 2 ** min(i + 1, 3) for i in range(depth)]
        self.start = (chans[-1], hs[-1], ws[-1])
        self.fc = nn.Sequential(nn.Linear(in_dim, chans[-1] * hs[-1] * ws[-1]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for i in range(depth, 0, -1):
            # ConvTranspose(k3, s2, p1) maps n -> 2n - 1 + output_padding; pick it to hit the size exactly.
            pad = (hs[i - 1] - (2 * hs[i] - 1), ws[i - 1] - (2 * ws[i] - 1))
            layers += [
                nn.ConvTranspose2d(chans[i], chans[i - 1], 3, stride=2, padding=1, output_padding=pad),
                nn.BatchNorm2d(chans[i - 1]),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.deconv(self.fc(z).view(-1, *self.start))
        return logits
