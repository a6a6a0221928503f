"""`aepipe predict` reads an image file exactly as `prepare` reads it from a `folder:` source.

The same files go through both paths and must give byte-identical uint8 pixels: 16-bit and
float images scaled by their range (not clipped), transparency composited over the same
background (`data.alpha` for prepare, `--alpha` or the model's record of it for predict), the
same channel conversion and the same BILINEAR resize to the model's size.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from aepipe import predict as predict_module
from aepipe.cli import build_parser, main
from aepipe.config import DataConfig, parse_params
from aepipe.data.sources import load_source
from aepipe.errors import DataError
from aepipe.predict import load_images

H, W = 10, 12  # the size of the written images (a few are H2×W2 when sizes are mixed)
H2, W2 = 9, 13


def data_cfg(**kw: object) -> DataConfig:
    return parse_params({"data": kw}).data


def _ramp16(h: int = H, w: int = W) -> np.ndarray:
    return (np.arange(h * w, dtype=np.int64).reshape(h, w) * (65000 // (h * w))).astype(np.uint16)


def _stroke_alpha(h: int = H, w: int = W) -> np.ndarray:
    alpha = np.zeros((h, w), np.uint8)
    alpha[2:7, 3:6] = 255  # the drawing
    alpha[0, 0] = 128  # half transparent
    alpha[1, 1] = 40
    return alpha


def _images(i: int, mixed_sizes: bool) -> dict[str, dict[str, Image.Image]]:
    """Class a: 16-bit ramp, LA, gray palette; class b: RGBA, RGB, float TIFF (variant i)."""
    rng = np.random.default_rng(i)
    h2, w2 = (H2, W2) if mixed_sizes else (H, W)

    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0] = 90 + 10 * i  # gray ink
    la[..., 1] = _stroke_alpha()

    pal = Image.new("P", (W, H), 0)
    pal.putpalette([0, 0, 0, 60, 60, 60, 200, 200, 200, 255, 255, 255])
    pal.paste(i % 4, (1, 1, 6, 5))
    pal.paste(2, (4, 3, 11, 9))

    rgba = np.zeros((h2, w2, 4), np.uint8)
    rgba[..., 0] = 200  # red ink ...
    rgba[..., 1] = rng.integers(0, 256, (h2, w2))
    rgba[..., 2] = 30 * i
    rgba[..., 3] = _stroke_alpha(h2, w2)  # ... partly transparent

    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)

    ramp = (np.arange(h2 * w2, dtype=np.float32).reshape(h2, w2) / (h2 * w2 - 1)).astype(np.float32)
    return {
        "a": {
            f"{i}-ramp16.png": Image.fromarray(_ramp16() if i % 2 == 0 else 65535 - _ramp16()),
            f"{i}-la.png": Image.fromarray(la, "LA"),
            f"{i}-pal.png": pal,
        },
        "b": {
            f"{i}-rgba.png": Image.fromarray(rgba, "RGBA"),
            f"{i}-rgb.png": Image.fromarray(rgb, "RGB"),
            f"{i}-float.tif": Image.fromarray(ramp if i % 2 == 0 else 1.0 - ramp),
        },
    }


def _folder(root: Path, mixed_sizes: bool = False) -> tuple[Path, list[Path]]:
    """A folder source (2 classes × 6 files) and its files in the order prepare reads them."""
    for i in range(2):
        for cls, files in _images(i, mixed_sizes).items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            for name, img in files.items():
                img.save(root / cls / name)
    modes = {Image.open(f).mode for f in root.glob("*/*")}
    assert {"I;16", "LA", "P", "RGBA", "RGB", "F"} <= modes, modes
    return root, [f for cls in ("a", "b") for f in sorted((root / cls).iterdir())]


@pytest.mark.parametrize(
    ("channels", "image_size", "mixed_sizes", "alpha"),
    [
        (1, None, False, "white"),
        (3, None, False, "white"),
        (1, (7, 9), True, "white"),  # resized: smaller, sizes differ
        (3, (16, 20), True, "white"),  # resized: larger
        (1, None, False, "black"),
        (3, (8, 8), False, "black"),
    ],
)
def test_predict_gives_the_pixels_prepare_gives_for_the_same_files(
    tmp_path: Path, channels: int, image_size: tuple[int, int] | None, mixed_sizes: bool, alpha: str
) -> None:
    root, files = _folder(tmp_path / "imgs", mixed_sizes)
    raw = load_source(
        data_cfg(source=f"folder:{root}", channels=channels, image_size=image_size, alpha=alpha)
    )
    shape = (channels, *(image_size or (H, W)))
    assert raw.x.shape == (len(files), *shape) and raw.x.dtype == np.uint8

    paths = [str(f) for f in files]
    if alpha == "white":  # the default, as data.alpha's
        names, x = load_images(paths, shape)
    else:
        names, x = load_images(paths, shape, alpha="black")
    assert names == [f.name for f in files]
    assert x.dtype == np.uint8 and x.shape == raw.x.shape
    for f, got, want in zip(files, x, raw.x, strict=True):
        assert np.array_equal(got, want), f"{f.name}: predict's pixels differ from prepare's"


def test_predict_resizes_to_the_model_when_prepare_did_not(tmp_path: Path) -> None:
    """A model of another size (trained with another image_size): the same pixels as a prepare
    run with that image_size."""
    root, files = _folder(tmp_path / "imgs")
    raw = load_source(data_cfg(source=f"folder:{root}", channels=3, image_size=(6, 5)))
    _, x = load_images([str(f) for f in files], (3, 6, 5))
    assert np.array_equal(x, raw.x)


def test_16bit_ramp_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = _ramp16()
    assert ramp.max() < 65535
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    _, x = load_images([str(tmp_path / "ramp.png")], (1, H, W))
    assert x.max() < 255  # clipping gave 255 almost everywhere
    np.testing.assert_array_equal(x[0, 0], np.rint(ramp * (255 / 65535)).astype(np.uint8))
    assert len(np.unique(x)) == H * W  # every level kept


def _white_ink_in_alpha(path: Path) -> Path:
    rgba = np.full((H, W, 4), 255, np.uint8)  # white ink on transparent: gone over white
    rgba[..., 3] = _stroke_alpha()
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_content_only_in_alpha_is_refused_over_white_naming_alpha_black(tmp_path: Path) -> None:
    img = _white_ink_in_alpha(tmp_path / "ink.png")
    with pytest.raises(DataError) as err:
        load_images([str(img)], (1, H, W))
    msg = str(err.value)
    assert "ink.png" in msg and "vanishes over a white background" in msg
    assert "--alpha black" in msg and "data.alpha: black" not in msg  # predict's option, not prepare's


def test_alpha_black_accepts_it_and_refuse_names_the_option(tmp_path: Path) -> None:
    img = _white_ink_in_alpha(tmp_path / "ink.png")
    _, x = load_images([str(img)], (1, H, W), alpha="black")
    assert x[0, 0, 3, 4] == 255 and x[0, 0, 9, 11] == 0 and x[0, 0, 0, 0] == 128  # 255 * 128/255
    with pytest.raises(DataError) as err:
        load_images([str(img)], (1, H, W), alpha="refuse")
    msg = str(err.value)
    assert "ink.png" in msg and "--alpha is refuse" in msg and "--alpha white or black" in msg


class _FakePair:
    """Stands in for the loaded model: records the images predict hands it."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.autoencoder = SimpleNamespace(spec=SimpleNamespace(input_shape=list(shape)))
        self.seen: list[np.ndarray] = []

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x)
        return np.full((len(x), 2), 0.5)


def test_cli_alpha_option_reaches_the_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--alpha {white,black,refuse}" in help_text
    assert "default: the data.alpha the model was trained with" in help_text
    assert "white for a model that predates the record" in help_text

    img = _white_ink_in_alpha(tmp_path / "ink.png")
    pair = _FakePair((1, H, W))
    monkeypatch.setattr(predict_module, "load_pair_model", lambda uri, workdir: (pair, ["a", "b"], None))
    model = str(tmp_path)  # a local path: no tracking server is contacted

    assert main(["predict", "--json", "--model", model, str(img)]) == 2  # no record: white
    err = capsys.readouterr().err
    assert "ink.png" in err and "--alpha black" in err and not pair.seen

    assert main(["predict", "--json", "--model", model, "--alpha", "black", str(img)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == ["ink.png"]
    _, expected = load_images([str(img)], (1, H, W), alpha="black")
    assert np.array_equal(pair.seen[0], expected)
