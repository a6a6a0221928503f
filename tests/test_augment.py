"""The semisup head's batch augmentations: shape, range, determinism, and that a digit stays that
digit (no mirror by default; a classifier learns the classes from strong views alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from aepipe.config import AugmentConfig
from aepipe.training import augment

CFG = AugmentConfig()


def digits() -> tuple[torch.Tensor, np.ndarray]:
    data = load_digits()
    return torch.from_numpy((data.images / 16.0).astype(np.float32))[:, None], data.target


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("view", [augment.weak, augment.strong])
@pytest.mark.parametrize("shape", [(64, 1, 8, 8), (16, 1, 28, 28), (8, 3, 32, 32)])
def test_views_keep_shape_dtype_and_range(view, shape) -> None:
    x = torch.rand(shape, generator=gen(1))
    out = view(x, CFG, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("view", [augment.weak, augment.strong])
def test_views_are_deterministic_under_a_seed_and_differ_across_seeds(view) -> None:
    x = torch.rand(32, 1, 28, 28, generator=gen(1))
    a, b, c = view(x, CFG, gen(7)), view(x, CFG, gen(7)), view(x, CFG, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)  # it did change the images


def test_no_augmentation_is_the_identity() -> None:
    x = torch.rand(8, 1, 28, 28, generator=gen(1))
    off = AugmentConfig(
        weak_translate=0, rotate_deg=0, scale=0, shear=0, translate=0, contrast=0, cutout=0, flip=False
    )
    assert torch.equal(augment.weak(x, off, gen()), x)
    assert torch.equal(augment.strong(x, off, gen()), x)


def test_weak_view_is_a_whole_pixel_shift_with_zero_fill() -> None:
    x = torch.rand(64, 1, 28, 28, generator=gen(2))
    out = augment.weak(x, CFG, gen(3))
    k = round(CFG.weak_translate * 28)
    padded = torch.nn.functional.pad(x, (k, k, k, k))
    for i in range(len(x)):  # some shift in [-k, k]^2 reproduces each image (up to float rounding)
        assert any(
            torch.allclose(out[i, 0], padded[i, 0, dy : dy + 28, dx : dx + 28], atol=1e-5)
            for dy in range(2 * k + 1)
            for dx in range(2 * k + 1)
        ), i


def test_cutout_blanks_one_square_and_leaves_the_rest() -> None:
    x = torch.full((32, 1, 28, 28), 0.5)
    out = augment.cutout(x, 0.25, gen())
    side = round(0.25 * 28)
    for img in out[:, 0]:
        hole = img == 0
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert len(rows) <= side and len(cols) <= side
        assert int(hole.sum()) == len(rows) * len(cols)  # a rectangle (a square clipped by the border)
        assert torch.all(img[~hole] == 0.5)


def test_contrast_keeps_each_image_mean_when_nothing_clips() -> None:
    x = 0.4 + 0.2 * torch.rand(
        16, 1, 8, 8, generator=gen(4)
    )  # in [0.4, 0.6]: a factor <= 1.5 stays in [0, 1]
    out = augment.random_contrast(x, 0.5, gen())
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-6)
    spread = (out.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))).numpy()
    assert spread.min() >= 0.5 - 1e-4 and spread.max() <= 1.5 + 1e-4 and spread.std() > 0.05


def test_no_mirror_by_default_and_half_mirrored_with_flip() -> None:
    """Ink on the left half stays on the left under the default strong view (a mirrored digit is
    another symbol); with ``flip`` about half the images move it to the right."""
    x = torch.zeros(256, 1, 28, 28)
    x[:, :, 8:20, 3:9] = 1.0
    cols = torch.arange(28.0)

    def centre(v: torch.Tensor) -> torch.Tensor:
        mass = v.sum(dim=(1, 2))
        return (v.sum(dim=1) * cols).sum(dim=1) / mass.clamp_min(1e-6)  # over rows: the column profile

    no_cut = CFG.model_copy(update={"cutout": 0.0, "contrast": 0.0})  # geometry only
    assert bool((centre(augment.strong(x, no_cut, gen())[:, 0]) < 13.5).all())
    flipped = centre(augment.strong(x, no_cut.model_copy(update={"flip": True}), gen())[:, 0]) > 13.5
    assert 0.35 < float(flipped.float().mean()) < 0.65


def test_a_classifier_learns_the_digits_from_strong_views_alone() -> None:
    """Labels stay meaningful: logistic regression fitted only on strongly augmented digits
    classifies clean held-out digits far above chance (0.10), and weak views as well as clean ones."""
    x, y = digits()
    train, test = slice(0, 1200), slice(1200, None)
    views = torch.cat([augment.strong(x[train], CFG, gen(s)) for s in range(5)])
    clf = LogisticRegression(max_iter=3000).fit(views.flatten(1).numpy(), np.tile(y[train], 5))
    clean = clf.score(x[test].flatten(1).numpy(), y[test])
    weak = clf.score(augment.weak(x[test], CFG, gen(9)).flatten(1).numpy(), y[test])
    assert clean > 0.85, clean
    assert weak > 0.85, weak
