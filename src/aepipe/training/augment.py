"""Batch image augmentations for consistency training, vectorised on the device.

Every transform acts on a whole float batch (N, C, H, W) in [0, 1] at once: random parameters are
drawn per image from a seeded ``torch.Generator`` (on the CPU, so a seed gives the same draws on
any device), geometric ones are folded into one affine matrix per image and applied with a single
``affine_grid`` + ``grid_sample`` call, photometric ones are per-image broadcasts. No per-sample
Python loop, no PIL.

The defaults suit digits and silhouettes (dark background, value 0): small shifts, rotations,
scaling and shear, cutout and contrast. No flips unless asked: a mirrored 2, 3, 4, 5, 7 or 9 is
not that digit. Zero padding fills what a shift or rotation uncovers.

- ``weak``: what the pseudo-label is read from: a small random translation.
- ``strong``: what the model must then agree with: random affine (rotation, scale, shear,
  translation), contrast, cutout (a square set to the background).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aepipe.config import AugmentConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    rotate_deg: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    translate: float = 0.0,
    flip: bool = False,
    whole_pixels: bool = False,
) -> torch.Tensor:
    """One random affine map per image: rotation in [-rotate_deg, rotate_deg], zoom factor in
    [1 - scale, 1 + scale], shear in [-shear, shear] (tangent), translation up to ``translate``
    times the image side per axis (rounded to whole pixels when ``whole_pixels``: a pure shift
    then copies pixels exactly, no blur), and a horizontal mirror with probability 1/2 when
    ``flip``. Bilinear sampling, zero fill outside the image."""
    n = x.shape[0]
    if n == 0 or not (rotate_deg or scale or shear or translate or flip):
        return x
    angle = _uniform(n, -rotate_deg, rotate_deg, generator) * (math.pi / 180.0)
    zoom = _uniform(n, 1.0 - scale, 1.0 + scale, generator)
    sh = _uniform(n, -shear, shear, generator)
    # affine_grid works in normalised coordinates [-1, 1]: a shift of t * side is 2t there.
    tx, ty = (_uniform(n, -2 * translate, 2 * translate, generator) for _ in range(2))
    if whole_pixels:  # one pixel is 2 / side in normalised coordinates
        h, w = x.shape[-2:]
        tx, ty = torch.round(tx * w / 2) * 2 / w, torch.round(ty * h / 2) * 2 / h
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input coordinates: rotation @ shear / zoom, the x column mirrored.
    theta = torch.stack(
        [
            torch.stack([cos / zoom * mirror, (cos * sh - sin) / zoom, tx], dim=1),
            torch.stack([sin / zoom * mirror, (sin * sh + cos) / zoom, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_contrast(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Blend each image with its own mean by a factor in [1 - strength, 1 + strength] (the
    torchvision definition of contrast), clamped to [0, 1]."""
    if strength == 0 or x.shape[0] == 0:
        return x
    factor = _uniform(x.shape[0], 1.0 - strength, 1.0 + strength, generator).to(x.device, x.dtype)
    factor = factor.view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor * (x - mean)).clamp_(0.0, 1.0)


def cutout(x: torch.Tensor, size: float, generator: torch.Generator) -> torch.Tensor:
    """Set one square per image, of side ``size`` times the shorter image side, to 0 (the
    background); its centre is uniform over the image, so it may be partly outside."""
    n, _, h, w = x.shape
    side = round(size * min(h, w))
    if side == 0 or n == 0:
        return x
    cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - side // 2)
    cols = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - side // 2)
    inside_r = (rows >= 0) & (rows < side)
    inside_c = (cols >= 0) & (cols < side)
    hole = inside_r[:, :, None] & inside_c[:, None, :]  # (n, h, w)
    return x.masked_fill(hole[:, None], 0.0)


def weak(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The view pseudo-labels are read from: a small translation (and a mirror if ``flip``)."""
    return random_affine(x, generator, translate=cfg.weak_translate, flip=cfg.flip, whole_pixels=True)


def strong(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The view the model must classify as the weak view's pseudo-label."""
    x = random_affine(
        x,
        generator,
        rotate_deg=cfg.rotate_deg,
        scale=cfg.scale,
        shear=cfg.shear,
        translate=cfg.translate,
        flip=cfg.flip,
    )
    x = random_contrast(x, cfg.contrast, generator)
    return cutout(x, cfg.cutout, generator)
