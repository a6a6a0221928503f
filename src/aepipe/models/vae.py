"""Variational autoencoder (beta-VAE): Bernoulli pixel likelihood, Gaussian posterior.

The loss is the negative ELBO with the KL term weighted by ``beta``, summed over pixels and
code units and averaged over images. Training decodes a posterior sample; ``encode``,
``features`` and ``reconstruct`` use the posterior mean, so downstream heads get
deterministic features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aepipe.models.base import ModelSpec
from aepipe.models.conv import ConvAutoEncoder
from aepipe.options import VAEOptions


class VariationalAutoEncoder(ConvAutoEncoder):
    options_class: type[VAEOptions] = VAEOptions

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec, code_dim=2 * spec.latent_dim)  # mean and log-variance
        self.options = self.options_class.model_validate(spec.options)

    def code(self, raw: torch.Tensor) -> torch.Tensor:
        return raw[:, : self.spec.latent_dim]  # the posterior mean

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raw, pooled = self.encoder.pooled(self.normalize(x))
        mu, logvar = raw[:, : self.spec.latent_dim], raw[:, self.spec.latent_dim :].clamp(-12.0, 12.0)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return {"z": z, "mu": mu, "logvar": logvar, "pooled": pooled, "logits": self.decode_logits(z)}

    def elbo_loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(negative beta-ELBO per image, its parts)."""
        n = x.shape[0]
        logits, mu, logvar = out["logits"].float(), out["mu"].float(), out["logvar"].float()
        bce = F.binary_cross_entropy_with_logits(logits, x.float(), reduction="sum") / n
        kl = -0.5 * torch.sum(1.0 + logvar - mu**2 - logvar.exp()) / n
        mse = torch.mean((torch.sigmoid(logits) - x.float()) ** 2)
        return bce + self.options.beta * kl, {"bce": bce, "kl": kl, "recon_mse": mse.detach()}

    def loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.elbo_loss(x, out)
