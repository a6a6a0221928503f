"""The autoencoder zoo: variant name -> (typed options, module class).

Adding a variant is one new module and one line here; ``model.name`` in params.yaml selects it
and ``model.<name>: {...}`` holds its options, validated by its config class.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from aepipe.models.base import AutoEncoder, ModelSpec
from aepipe.models.conv import ConvAutoEncoder, ConvOptions
from aepipe.models.denoising import DenoisingAutoEncoder, DenoisingOptions
from aepipe.models.dense import DenseAutoEncoder, DenseOptions
from aepipe.models.mae import MAEOptions, MaskedAutoEncoder
from aepipe.models.sparse import SparseAutoEncoder, SparseOptions
from aepipe.models.vae import VAEOptions, VariationalAutoEncoder
from aepipe.models.vae_joint import JointVAE, JointVAEOptions


@dataclass(frozen=True)
class Variant:
    config: type[BaseModel]
    module: type[AutoEncoder]


REGISTRY: dict[str, Variant] = {
    "conv": Variant(ConvOptions, ConvAutoEncoder),
    "dense": Variant(DenseOptions, DenseAutoEncoder),
    "denoising": Variant(DenoisingOptions, DenoisingAutoEncoder),
    "sparse": Variant(SparseOptions, SparseAutoEncoder),
    "vae": Variant(VAEOptions, VariationalAutoEncoder),
    "vae_joint": Variant(JointVAEOptions, JointVAE),
    "mae": Variant(MAEOptions, MaskedAutoEncoder),
}


def build_autoencoder(spec: ModelSpec) -> AutoEncoder:
    from aepipe.errors import ModelError

    if spec.name not in REGISTRY:
        raise ModelError(f"unknown autoencoder variant {spec.name!r}; known: {', '.join(sorted(REGISTRY))}")
    variant = REGISTRY[spec.name]
    variant.config.model_validate(spec.options)
    return variant.module(spec)


__all__ = ["REGISTRY", "AutoEncoder", "ModelSpec", "Variant", "build_autoencoder"]
