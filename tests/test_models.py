from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.errors import DataError, ModelError
from aepipe.models import REGISTRY, ModelSpec, build_autoencoder
from aepipe.models.heads import LinearClassifier
from aepipe.models.io import head_spec, load_autoencoder, load_head, save_autoencoder, save_module
from aepipe.models.pair import EncoderClassifier, to_unit_float


def spec(name: str = "conv", shape: tuple[int, int, int] = (1, 8, 8), **kw) -> ModelSpec:
    base = {
        "name": name,
        "input_shape": shape,
        "latent_dim": 16,
        "width": 8,
        "depth": 2,
        "mean": (0.3,) * shape[0],
        "std": (0.2,) * shape[0],
        "n_classes": 3,
    }
    return ModelSpec(**{**base, **kw})


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 13, 17)])
def test_shapes_for_any_input_size(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_autoencoder(spec(name, shape)).eval()
    x = torch.rand(5, *shape)
    out = model(x)
    assert out["logits"].shape == x.shape
    assert model.encode(x).shape == (5, 16)
    assert model.reconstruct(x).shape == x.shape
    feats = model.features(x)
    assert feats.shape[0] == 5 and feats.shape[1] > 16  # multiscale: stage pools + code
    latent_only = build_autoencoder(spec(name, shape, features="latent")).eval()
    assert latent_only.features(x).shape == (5, 16)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_loss_decreases_and_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_autoencoder(spec(name))
    # 4 binary prototypes: structure a masked model can learn, and a Bernoulli likelihood near 0
    x = (torch.rand(4, 1, 8, 8) > 0.5).float().repeat(8, 1, 1, 1)
    labels = torch.arange(32) % 4 % 3 if model.uses_labels else None  # a function of the prototype
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(25):
        loss, parts = model.loss(x, model(x), labels)
        assert torch.isfinite(loss) and parts
        opt.zero_grad()
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
            assert not missing, missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_save_load_round_trip_and_eval_determinism(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = build_autoencoder(spec(name))
    model(torch.rand(8, 1, 8, 8))  # move BatchNorm running stats off their defaults
    model.eval()
    save_autoencoder(tmp_path / "ae", model)
    loaded = load_autoencoder(tmp_path / "ae")
    x = torch.rand(4, 1, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.features(x), model.features(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.features(x), loaded.features(x), rtol=0, atol=0)
    assert loaded.spec == model.spec


def test_weights_file_with_pickled_code_is_refused(tmp_path: Path) -> None:
    model = build_autoencoder(spec())
    save_autoencoder(tmp_path / "ae", model)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "ae" / "weights.pt").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ModelError, match="cannot be loaded as a state_dict"):
        load_autoencoder(tmp_path / "ae")


def test_unknown_variant_in_saved_spec_is_a_clear_error(tmp_path: Path) -> None:
    save_autoencoder(tmp_path / "ae", build_autoencoder(spec()))
    text = (tmp_path / "ae" / "spec.json").read_text().replace('"conv"', '"nope"')
    (tmp_path / "ae" / "spec.json").write_text(text)
    with pytest.raises(ModelError, match="unknown variant 'nope'"):
        load_autoencoder(tmp_path / "ae")


def test_pair_accepts_uint8_float_and_missing_channel_axis(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ae = build_autoencoder(spec()).eval()
    head = LinearClassifier(ae.features(torch.rand(1, 1, 8, 8)).shape[1], 3)
    save_module(tmp_path / "clf", head, head_spec("linear", head.linear.in_features, 3))
    head, _ = load_head(tmp_path / "clf")
    pair = EncoderClassifier(ae, head)
    u8 = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    p1 = pair.predict_proba(u8)
    p2 = pair.predict_proba(u8[:, None].astype(np.float32) / 255.0)
    assert p1.shape == (6, 3)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 1, 9, 8), np.uint8), "expects N×1×8×8"),
        (np.full((2, 8, 8), 3.0), r"must lie in \[0, 1\]"),
        (np.full((2, 8, 8), np.nan), "NaN or inf"),
        (np.zeros((2, 8, 8), dtype=bool), "dtype bool"),
    ],
)
def test_bad_images_to_the_model_are_refused(images: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        to_unit_float(images, (1, 8, 8))
