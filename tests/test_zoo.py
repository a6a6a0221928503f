"""What each autoencoder variant adds on top of the shared backbone, and how labels reach the
one variant that uses them (the generic per-variant checks are in test_models.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.config import PretrainConfig, parse_params
from aepipe.errors import ModelError
from aepipe.models import REGISTRY, ModelSpec, build_autoencoder
from aepipe.models.denoising import corrupt
from aepipe.models.mae import patch_mask
from aepipe.training.pretrain import pretrain


def spec(name: str, options: dict | None = None, **kw) -> ModelSpec:
    base = {
        "name": name,
        "input_shape": (1, 8, 8),
        "latent_dim": 6,
        "width": 4,
        "depth": 2,
        "options": options or {},
        "mean": (0.3,),
        "std": (0.2,),
        "n_classes": 3,
    }
    return ModelSpec(**{**base, **kw})


def batch(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_every_variant_is_selectable_with_typed_options_from_params() -> None:
    assert set(REGISTRY) == {"conv", "dense", "denoising", "sparse", "vae", "vae_joint", "mae"}
    params = parse_params({"model": {"name": "vae", "vae": {"beta": 4}, "mae": {"mask_ratio": 0.75}}})
    assert params.model.options().beta == 4.0
    assert params.model.options("mae").mask_ratio == 0.75
    assert params.model.options("sparse").penalty == "l1"  # defaults when the section is absent


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        ({"denoising": {"noise": "pink"}}, ["model.denoising", "noise", "gaussian"]),
        ({"vae": {"beta": -1}}, ["model.vae", "beta", "greater than or equal to 0"]),
        ({"mae": {"mask_ratio": 1.0}}, ["model.mae", "mask_ratio", "less than 1"]),
        ({"sparse": {"penalty": "l2"}}, ["model.sparse", "penalty", "'l1' or 'kl'"]),
        ({"vae_joint": {"lambda": 2}}, ["model.vae_joint", "lambda", "unknown key"]),
        ({"pool_grid": 0}, ["model.pool_grid", "greater than or equal to 1"]),
    ],
)
def test_bad_variant_options_name_the_key(model: dict, needles: list[str]) -> None:
    from aepipe.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_params({"model": model})
    for needle in needles:
        assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize("noise", ["gaussian", "masking", "salt_pepper"])
def test_denoising_corrupts_only_in_training_and_keeps_pixels_in_range(noise: str) -> None:
    x = batch(64)
    torch.manual_seed(0)
    noisy = corrupt(x, noise, 0.3)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, x)
    if noise != "gaussian":
        assert abs(float((noisy != x).float().mean()) - 0.3) < 0.05
    model = build_autoencoder(spec("denoising", {"noise": noise, "level": 0.3}))
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(x)["logits"], model(x)["logits"], rtol=0, atol=0)
    model.train()
    loss, _ = model.loss(x, model(x))  # the target is the clean batch
    clean = torch.mean((torch.sigmoid(model.decode_logits(model.encode(x))) - x) ** 2)
    assert torch.isfinite(loss) and not torch.isclose(loss, clean)


@pytest.mark.parametrize("penalty", ["l1", "kl"])
def test_sparse_loss_is_mse_plus_weighted_penalty(penalty: str) -> None:
    model = build_autoencoder(spec("sparse", {"penalty": penalty, "weight": 0.5, "target": 0.1})).eval()
    x = batch()
    out = model(x)
    loss, parts = model.loss(x, out)
    torch.testing.assert_close(loss, parts["recon_mse"] + 0.5 * parts["sparsity"])
    z = model.encode(x)
    if penalty == "kl":
        assert z.min() > 0 and z.max() < 1
        rho_hat = z.mean(0)
        expected = torch.sum(0.1 * torch.log(0.1 / rho_hat) + 0.9 * torch.log(0.9 / (1 - rho_hat)))
    else:
        expected = z.abs().mean()
    torch.testing.assert_close(parts["sparsity"], expected)


def test_vae_features_are_the_posterior_mean_and_training_samples() -> None:
    torch.manual_seed(0)
    model = build_autoencoder(spec("vae", {"beta": 2.0}, features="latent"))
    x = batch()
    model.train()
    out = model(x)
    assert not torch.equal(out["z"], out["mu"])  # a sample while training
    loss, parts = model.loss(x, out)
    torch.testing.assert_close(loss, parts["bce"] + 2.0 * parts["kl"])
    assert parts["kl"] > 0
    model.eval()
    with torch.inference_mode():
        mu = model(x)["mu"]
        torch.testing.assert_close(model.features(x), mu, rtol=0, atol=0)
        torch.testing.assert_close(model.encode(x), mu, rtol=0, atol=0)
        torch.testing.assert_close(model.features(x), model.features(x), rtol=0, atol=0)


@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_joint_loss_is_elbo_plus_lambda_cross_entropy(lam: float) -> None:
    torch.manual_seed(0)
    model = build_autoencoder(spec("vae_joint", {"lam": lam, "beta": 1.0})).eval()
    x = batch()
    labels = torch.tensor([0, 1, 2, -1] * 3)
    out = model(x)
    loss, parts = model.loss(x, out, labels)
    elbo, _ = model.elbo_loss(x, out)
    known = labels >= 0
    ce = torch.nn.functional.cross_entropy(out["class_logits"][known], labels[known])
    assert elbo > 0 and ce > 0
    torch.testing.assert_close(loss, elbo + lam * ce)
    torch.testing.assert_close(parts["ce"], ce)
    unlabelled, parts = model.loss(x, out, torch.full((12,), -1))
    torch.testing.assert_close(unlabelled, elbo)
    assert parts["ce"] == 0


def test_joint_vae_needs_the_class_count() -> None:
    with pytest.raises(ModelError, match="number of classes"):
        build_autoencoder(spec("vae_joint", n_classes=0))


def test_mae_masks_whole_patches_at_the_ratio_and_scores_only_hidden_pixels() -> None:
    x = batch(16)
    mask = patch_mask(torch.rand(16, 1, 28, 28), 0.75, 4)
    assert mask.shape == (16, 1, 28, 28)
    assert torch.all(
        mask.view(16, 7, 4, 7, 4).amax(dim=(2, 4)) == mask.view(16, 7, 4, 7, 4).amin(dim=(2, 4))
    )  # whole patches
    assert torch.all(mask.sum(dim=(1, 2, 3)) == round(0.75 * 49) * 16)
    model = build_autoencoder(spec("mae", {"mask_ratio": 0.5, "patch_size": 2}))
    torch.manual_seed(0)
    model.train()
    out = model(x)
    hidden = out["mask"].bool()
    err = (torch.sigmoid(out["logits"]) - x) ** 2
    loss, _ = model.loss(x, out)
    torch.testing.assert_close(loss, err[hidden].mean())
    model.eval()
    with torch.inference_mode():
        assert "mask" not in model(x)  # no masking for features and reconstructions
        torch.testing.assert_close(model.features(x), model.features(x), rtol=0, atol=0)


def test_dense_sizes_follow_the_shared_width_and_depth() -> None:
    model = build_autoencoder(spec("dense", {"units_per_width": 4}, width=8, depth=3)).eval()
    assert [layer[0].out_features for layer in model.hidden] == [32, 16, 8]
    assert model.features(batch()).shape == (12, 32 + 16 + 8 + 6)


def test_pool_grid_keeps_layout_in_multiscale_features() -> None:
    model = build_autoencoder(spec("conv", width=4, pool_grid=2)).eval()
    channels = 4 + 8 + 16
    assert model.features(batch()).shape == (12, channels * 4 + 6)


def toy(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.integers(0, 40, size=(n, 1, 8, 8), dtype=np.uint8)
    for i, label in enumerate(y):
        x[i, :, label * 2 : label * 2 + 2] = 230
    return x, y


def test_pretraining_passes_labels_only_to_models_that_use_them() -> None:
    x, y = toy()
    partial = np.where(np.arange(len(y)) < 6, y, -1)  # 6 labelled images, the rest unlabelled
    cfg = PretrainConfig(epochs=2, batch_size=16)
    torch.manual_seed(0)
    joint = build_autoencoder(spec("vae_joint", {"labelled_per_batch": 4}))
    history = pretrain(
        joint, x, x[:12], cfg, torch.Generator().manual_seed(0), torch.device("cpu"), None, partial, y[:12]
    )
    assert history[-1].parts["ce"] > 0 and np.isfinite(history[-1].train_loss)
    with pytest.raises(ModelError, match="trains with labels"):
        pretrain(build_autoencoder(spec("vae_joint")), x, x[:12], cfg, torch.Generator(), torch.device("cpu"))

    # a label-free variant gives the same result with or without labels
    def conv_run(labels: np.ndarray | None) -> float:
        torch.manual_seed(0)
        model = build_autoencoder(spec("conv"))
        return pretrain(
            model, x, x[:12], cfg, torch.Generator().manual_seed(0), torch.device("cpu"), None, labels, y[:12]
        )[-1].val_loss

    assert conv_run(partial) == conv_run(None)


def test_pretrain_stage_gives_vae_joint_the_labelled_subset_train_uses(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aepipe.data.prepared import load_prepared
    from aepipe.data.splits import labelled_subset
    from aepipe.stages import prepare
    from aepipe.stages import pretrain as stage

    params = parse_params(
        {
            "seed": 3,
            "model": {"name": "vae_joint", "width": 4},
            "pretrain": {"epochs": 1},
            "classifier": {"labels_per_class": 2},
        }
    )
    prepare.run(params, tmp_path / "data")
    seen = {}
    real = stage.pretrain

    def spy(model, x_train, x_val, cfg, generator, device, on_epoch=None, y_train=None, y_val=None, **loop):
        seen["y"], seen["classes"] = y_train, model.spec.n_classes
        return real(model, x_train, x_val, cfg, generator, device, on_epoch, y_train, y_val, **loop)

    monkeypatch.setattr(stage, "pretrain", spy)
    stage.run(params, tmp_path / "data", tmp_path / "ae", tmp_path / "m.json", tmp_path / "plots")
    _, y_train = load_prepared(tmp_path / "data").split("train")
    picked = labelled_subset(y_train, 2, 3)
    assert np.array_equal(np.flatnonzero(seen["y"] >= 0), picked)
    assert np.array_equal(seen["y"][picked], y_train[picked]) and seen["classes"] == 10
