"""Sparse autoencoder: pixel MSE plus a sparsity penalty on the code.

``l1``: weight * mean |z| on the linear code. ``kl``: the code is a sigmoid and each unit's
mean activation over the batch is pulled towards ``target`` with KL(target || mean), the
classic sparse-autoencoder penalty.
"""

from __future__ import annotations

import torch

from aepipe.models.base import ModelSpec
from aepipe.models.conv import ConvAutoEncoder
from aepipe.options import SparseOptions


class SparseAutoEncoder(ConvAutoEncoder):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = SparseOptions.model_validate(spec.options)

    def code(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw) if self.options.penalty == "kl" else raw

    def loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mse, parts = super().loss(x, out)
        z = out["z"].float()
        if self.options.penalty == "l1":
            penalty = z.abs().mean()
        else:
            rho, rho_hat = self.options.target, z.mean(dim=0).clamp(1e-6, 1 - 1e-6)
            penalty = torch.sum(
                rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            )
        return mse + self.options.weight * penalty, {**parts, "sparsity": penalty}
