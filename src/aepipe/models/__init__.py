"""The autoencoder zoo: variant name -> (typed options, module class).

Adding a variant is its options class in ``aepipe/options.py`` (one entry in VARIANT_OPTIONS:
params validation needs no torch), its module here in ``aepipe/models/``, and one line in
MODULES below; ``model.name`` in params.yaml selects it and ``model.<name>: {...}`` holds its
options. tests/test_layers.py checks the two tables name the same variants.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from aepipe.models.base import AutoEncoder, ModelSpec
from aepipe.models.conv import ConvAutoEncoder
from aepipe.models.denoising import DenoisingAutoEncoder
from aepipe.models.dense import DenseAutoEncoder
from aepipe.models.mae import MaskedAutoEncoder
from aepipe.models.sparse import SparseAutoEncoder
from aepipe.models.vae import VariationalAutoEncoder
from aepipe.models.vae_joint import JointVAE
from aepipe.options import VARIANT_OPTIONS


@dataclass(frozen=True)
class Variant:
    config: type[BaseModel]
    module: type[AutoEncoder]


MODULES: dict[str, type[AutoEncoder]] = {
    "conv": ConvAutoEncoder,
    "dense": DenseAutoEncoder,
    "denoising": DenoisingAutoEncoder,
    "sparse": SparseAutoEncoder,
    "vae": VariationalAutoEncoder,
    "vae_joint": JointVAE,
    "mae": MaskedAutoEncoder,
}
# Every variant's options (aepipe.options, torch-free: what params validation uses) and module.
REGISTRY: dict[str, Variant] = {
    name: Variant(VARIANT_OPTIONS[name], module) for name, module in MODULES.items()
}


def build_autoencoder(spec: ModelSpec) -> AutoEncoder:
    from aepipe.errors import ModelError

    if spec.name not in REGISTRY:
        raise ModelError(f"unknown autoencoder variant {spec.name!r}; known: {', '.join(sorted(REGISTRY))}")
    variant = REGISTRY[spec.name]
    variant.config.model_validate(spec.options)
    return variant.module(spec)


__all__ = ["REGISTRY", "AutoEncoder", "ModelSpec", "Variant", "build_autoencoder"]
