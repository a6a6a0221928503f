"""Masked autoencoder on patches: hide a share of square patches, reconstruct them.

While training, ``mask_ratio`` of the ``patch_size`` x ``patch_size`` patches of each image
are replaced by the training mean (0 after normalisation) and the loss is the MSE on the
hidden pixels only, so the encoder must infer strokes from context. At eval time (features,
reconstructions, validation loss) nothing is masked and the loss is the plain pixel MSE.
"""

from __future__ import annotations

import math

import torch

from aepipe.models.base import ModelSpec
from aepipe.models.conv import ConvAutoEncoder
from aepipe.options import MAEOptions


def patch_mask(x: torch.Tensor, ratio: float, patch: int) -> torch.Tensor:
    """(N, 1, H, W) float mask, 1 = hidden; exactly round(ratio * patches) patches per image."""
    n, _, h, w = x.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    total = gh * gw
    hidden = min(max(round(ratio * total), 1), total - 1) if total > 1 else 1
    order = torch.rand(n, total, device=x.device).argsort(dim=1)
    mask = (order < hidden).to(x.dtype).view(n, 1, gh, gw)
    return mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :h, :w]


class MaskedAutoEncoder(ConvAutoEncoder):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = MAEOptions.model_validate(spec.options)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.training:
            return super().forward(x)
        mask = patch_mask(x, self.options.mask_ratio, self.options.patch_size)
        out = super().forward(x * (1 - mask) + self.pixel_mean * mask)
        return {**out, "mask": mask}

    def loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        err = (torch.sigmoid(out["logits"].float()) - x.float()) ** 2
        mse = err.mean()
        if "mask" not in out:
            return mse, {"recon_mse": mse}
        mask = out["mask"].expand_as(err)
        masked = (err * mask).sum() / mask.sum().clamp_min(1.0)
        return masked, {"masked_mse": masked, "recon_mse": mse.detach()}
