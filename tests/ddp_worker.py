"""Run the project's pretraining loop once, as one process or as one rank under torchrun.

Used by tests/test_distributed.py: ``python tests/ddp_worker.py OUT MODEL`` and
``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT MODEL`` train on the same toy data with
the same global batch; rank 0 (or the single process) saves the curve and the final weights.
MODEL ``plain`` is a conv autoencoder without BatchNorm (where data parallelism on CPU must
reproduce one process); ``conv`` is the project's conv autoencoder (BatchNorm, local batch
statistics under gloo).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from aepipe.config import PretrainConfig
from aepipe.models import ModelSpec, build_autoencoder
from aepipe.models.base import AutoEncoder
from aepipe.training.distributed import DistEnv
from aepipe.training.pretrain import pretrain


class PlainAutoEncoder(AutoEncoder):
    """Conv encoder/decoder without normalisation layers: every op is per sample."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 6)
        )
        self.decoder = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Unflatten(1, (1, 8, 8)))

    def encode_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(self.normalize(x))
        return z, z

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def main(out: str, kind: str) -> None:
    dist = DistEnv.from_env()
    device = torch.device("cpu")
    dist.start(device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(203, 1, 8, 8), dtype=np.uint8)  # 203 = 6 batches of 32 + 11: uneven slices
    spec = ModelSpec(name="conv", input_shape=(1, 8, 8), latent_dim=6, width=4, depth=1)
    torch.manual_seed(0)
    model = PlainAutoEncoder(spec) if kind == "plain" else build_autoencoder(spec)
    cfg = PretrainConfig(epochs=3, batch_size=32, sync_every=2)
    history = pretrain(model, x, x[:40], cfg, torch.Generator().manual_seed(0), device, dist=dist)
    if dist.is_main:
        torch.save(
            {
                "train": [h.train_loss for h in history],
                "val": [h.val_loss for h in history],
                "state": model.state_dict(),
            },
            out,
        )
    dist.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
