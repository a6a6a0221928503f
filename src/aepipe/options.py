"""The typed options of every autoencoder variant and the names of the classifier heads.

Torch-free on purpose: ``aepipe.config`` validates params.yaml with these alone, so ``aepipe params``
(and every command's params check) runs without importing torch. The modules that implement a
variant or a head live in ``aepipe.models``; tests/test_layers.py checks that
``aepipe.models.REGISTRY`` and ``aepipe.models.heads.HEADS`` hold exactly the names listed here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ConvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DenseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    units_per_width: int = Field(
        16, ge=1, le=256, description="first hidden layer = model.width x this; halves per layer"
    )


class DenoisingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    noise: Literal["gaussian", "masking", "salt_pepper"] = Field(
        "gaussian",
        description="gaussian: add N(0, level^2); masking: zero a `level` share of pixels; salt_pepper: set "
        "a `level` share to 0 or 1",
    )
    level: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="noise std (gaussian) or share of corrupted pixels, in [0, 1] pixel units",
    )


class MAEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_ratio: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of patches hidden from the encoder while training"
    )
    patch_size: int = Field(4, ge=1, le=64, description="side of a square patch in pixels")


class SparseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    penalty: Literal["l1", "kl"] = Field(
        "l1", description="l1 on the code, or KL to a target mean activation"
    )
    weight: float = Field(1e-3, ge=0.0, description="weight of the penalty against the pixel MSE")
    target: float = Field(
        0.05, gt=0.0, lt=1.0, description="kl only: wanted mean activation of each code unit"
    )


class VAEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    beta: float = Field(1.0, ge=0.0, description="weight of the KL term (1 = the plain ELBO)")


class JointVAEOptions(VAEOptions):
    lam: float = Field(
        100.0, ge=0.0, description="weight of the classifier's cross-entropy against the ELBO (lambda)"
    )
    labelled_per_batch: int = Field(
        32, ge=0, le=4096, description="labelled images added to every pretraining batch (0 = none)"
    )


# model.name -> the options of that variant (``model.<name>: {...}`` in params.yaml).
VARIANT_OPTIONS: dict[str, type[BaseModel]] = {
    "conv": ConvOptions,
    "dense": DenseOptions,
    "denoising": DenoisingOptions,
    "sparse": SparseOptions,
    "vae": VAEOptions,
    "vae_joint": JointVAEOptions,
    "mae": MAEOptions,
}

# classifier.head values (besides ``auto``); their settings are ``classifier.<name>`` in aepipe.config.
HEAD_NAMES: tuple[str, ...] = ("linear", "mlp", "finetune", "semisup")
# Heads that train the encoder too: their train task needs the GPU the pretrain task gets (the
# Kubeflow pipeline reads this without importing torch; aepipe.models.heads.HEADS is built from it).
ENCODER_HEADS: tuple[str, ...] = ("finetune", "semisup")
