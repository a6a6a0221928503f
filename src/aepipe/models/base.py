"""The contract every autoencoder variant meets, and the spec that rebuilds one from JSON.

Inputs are images scaled to [0, 1] (N, C, H, W); each model normalises them with the training
split's channel mean/std held as buffers, so a saved model is self-contained: the registered
MLflow model needs nothing but the state_dict and this spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a variant before loading its state_dict."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    latent_dim: int
    width: int
    depth: int
    options: dict[str, Any] = field(default_factory=dict)
    features: str = "multiscale"  # "latent": the code alone; "multiscale": stage pools + code
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pool_grid: int = 1  # multiscale: each stage average-pooled to a pool_grid x pool_grid grid
    n_classes: int = 0  # label classes; only variants that train with labels (vae_joint) use it

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            name=str(data["name"]),
            # (C, H, W) as to_json wrote it; a spec.json of another length fails where the shape is used
            input_shape=tuple(int(v) for v in data["input_shape"]),  # type: ignore[arg-type]
            latent_dim=int(data["latent_dim"]),
            width=int(data["width"]),
            depth=int(data["depth"]),
            options=dict(data.get("options") or {}),
            features=str(data.get("features", "latent")),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            pool_grid=int(data.get("pool_grid", 1)),
            n_classes=int(data.get("n_classes", 0)),
        )


class AutoEncoder(nn.Module):
    """Base class. Subclasses set up ``encoder``/``decoder`` and may override ``loss``.

    ``features`` is what downstream heads consume: deterministic, and for probabilistic
    variants the posterior mean rather than a sample. Training-time randomness (noise, masks,
    sampling) lives in ``forward`` and only acts in training mode.

    A variant that learns from labels sets ``uses_labels``; the pretraining loop then passes
    ``labels`` to ``loss`` (-1 = unlabelled) and adds ``labelled_per_batch`` labelled images to
    each batch so a small labelled subset is not drowned out by the unlabelled ones.
    """

    uses_labels: bool = False
    labelled_per_batch: int = 0
    pixel_mean: torch.Tensor  # buffers, registered in __init__
    pixel_std: torch.Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        channels = spec.input_shape[0]
        self.register_buffer(
            "pixel_mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, channels, 1, 1)
        )
        self.register_buffer("pixel_std", torch.tensor(spec.std, dtype=torch.float32).view(1, channels, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code of images in [0, 1] (for probabilistic variants: the posterior mean)."""
        return self.encode_parts(x)[0]

    def encode_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent code, pooled activations of every encoder stage)."""
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction in [0, 1] (probabilistic variants decode the mean)."""
        return self.decode(self.encode(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z, pooled = self.encode_parts(x)
        return z if self.spec.features == "latent" else torch.cat([pooled, z], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        return {"z": z, "logits": self.decode_logits(z)}

    def loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named parts (logged per epoch). Default: pixel MSE in [0, 1]."""
        recon = torch.sigmoid(out["logits"].float())
        mse = torch.mean((recon - x.float()) ** 2)
        return mse, {"recon_mse": mse}
