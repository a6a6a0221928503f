"""VAE trained jointly with a classifier on the labelled subset: loss = ELBO + lambda * CE.

Labels shape the same features the downstream head later reads (the classifier sits on
``features``: the posterior mean, plus the stage pools when ``model.features`` is multiscale).
The pretraining loop passes labels (-1 = unlabelled) and mixes ``labelled_per_batch`` labelled
images into every batch, so with 10 labels per class the cross-entropy term still acts on every
step. The ELBO is summed over pixels (hundreds of nats on MNIST), hence the large default lambda.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aepipe.errors import ModelError
from aepipe.models.base import ModelSpec
from aepipe.models.vae import VariationalAutoEncoder
from aepipe.options import JointVAEOptions


class JointVAE(VariationalAutoEncoder):
    options_class = JointVAEOptions
    options: JointVAEOptions  # built from options_class by VariationalAutoEncoder.__init__
    uses_labels = True

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        if spec.n_classes < 2:
            raise ModelError(
                f"vae_joint needs the number of classes (got n_classes={spec.n_classes}); build it through "
                "the pretrain stage"
            )
        feature_dim = spec.latent_dim + (0 if spec.features == "latent" else self.encoder.pooled_dim)
        self.classifier = nn.Linear(feature_dim, spec.n_classes)
        self.labelled_per_batch = self.options.labelled_per_batch

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        feats = out["mu"] if self.spec.features == "latent" else torch.cat([out["pooled"], out["mu"]], dim=1)
        return {**out, "class_logits": self.classifier(feats)}

    def loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        elbo, parts = self.elbo_loss(x, out)
        known = labels >= 0 if labels is not None else None
        if labels is not None and known is not None and bool(known.any()):
            ce = F.cross_entropy(out["class_logits"][known].float(), labels[known].long())
        else:
            ce = out["class_logits"].sum() * 0.0  # no labelled image in this batch
        return elbo + self.options.lam * ce, {**parts, "elbo": elbo.detach(), "ce": ce.detach()}
