from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aepipe.config import parse_params
from aepipe.data.prepared import load_prepared
from aepipe.data.sources import load_source
from aepipe.errors import DataError
from aepipe.stages import prepare
from tests.conftest import toy_images, write_npz


def data_cfg(**kw):
    return parse_params({"data": kw}).data


def test_digits_is_embedded_uint8_nchw() -> None:
    raw = load_source(data_cfg(source="digits"))
    assert raw.x.shape == (1797, 1, 8, 8) and raw.x.dtype == np.uint8
    assert raw.x.max() == 255 and raw.classes == [str(i) for i in range(10)]
    assert raw.x_test is None


def test_npz_keras_layout_keeps_the_given_test_split(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=10, classes=3)
    xt, yt = toy_images(n_per_class=4, classes=3, seed=1)
    path = write_npz(tmp_path / "d.npz", x_train=x[:, 0], y_train=y, x_test=xt[:, 0], y_test=yt)
    params = parse_params({"data": {"source": f"npz:{path}", "val_fraction": 0.2}})
    result = prepare.run(params, tmp_path / "prepared")
    ds = load_prepared(tmp_path / "prepared")
    assert result["counts"] == {"train": 24, "val": 6, "test": 12}
    np.testing.assert_array_equal(ds.split("test")[0], xt)
    assert ds.meta["test_split"] == "given" and ds.meta["shape"] == [1, 8, 8]
    # stratified: every class in train and val
    assert set(ds.split("val")[1]) == {0, 1, 2}


def test_npz_x_y_nhwc_rgb_and_float_in_unit_range(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=6, classes=2, channels=3)
    nhwc = x.transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    raw = load_source(data_cfg(source=f"npz:{write_npz(tmp_path / 'd.npz', x=nhwc, y=y)}"))
    assert raw.x.shape == (12, 3, 8, 8)
    np.testing.assert_array_equal(raw.x, x)


def test_npz_class_names_are_used(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=5, classes=2)
    raw = load_source(
        data_cfg(
            source=f"npz:{write_npz(tmp_path / 'd.npz', x=x, y=y, class_names=np.array(['cat', 'dog']))}"
        )
    )
    assert raw.classes == ["cat", "dog"]


def _png_tree(root: Path, classes: dict[str, list[Image.Image]]) -> Path:
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images):
            img.save(root / name / f"{i}.png")
    return root


def _imgs(n: int, size: tuple[int, int], mode: str = "L", value: int = 0) -> list[Image.Image]:
    return [Image.new(mode, size, color=value if mode == "L" else (value, 0, 255 - value)) for _ in range(n)]


def test_folder_grayscale_one_subfolder_per_class(tmp_path: Path) -> None:
    root = _png_tree(tmp_path / "imgs", {"a": _imgs(4, (10, 6), value=10), "b": _imgs(5, (10, 6), value=200)})
    raw = load_source(data_cfg(source=f"folder:{root}"))
    assert raw.x.shape == (9, 1, 6, 10)  # (C, H, W): PIL sizes are (width, height)
    assert raw.classes == ["a", "b"] and list(raw.y) == [0] * 4 + [1] * 5
    assert raw.x[0].max() == 10 and raw.x[-1].min() == 200


def test_folder_rgb_resized_to_image_size(tmp_path: Path) -> None:
    root = _png_tree(tmp_path / "imgs", {"a": _imgs(3, (12, 12), "RGB"), "b": _imgs(3, (20, 16), "RGB", 100)})
    raw = load_source(data_cfg(source=f"folder:{root}", image_size=[8, 9]))
    assert raw.x.shape == (6, 3, 8, 9)


def test_folder_jpeg_mixed_modes_converted_when_channels_set(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png_tree(root, {"a": _imgs(3, (8, 8), "L")})
    (root / "b").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "b" / f"{i}.jpg", quality=95)
    with pytest.raises(DataError, match=r"set data\.channels"):
        load_source(data_cfg(source=f"folder:{root}"))
    raw = load_source(data_cfg(source=f"folder:{root}", channels=1))
    assert raw.x.shape == (6, 1, 8, 8)


def test_folder_train_test_layout_keeps_test(tmp_path: Path) -> None:
    _png_tree(tmp_path / "imgs" / "train", {"a": _imgs(4, (8, 8)), "b": _imgs(4, (8, 8), value=255)})
    _png_tree(tmp_path / "imgs" / "test", {"a": _imgs(2, (8, 8)), "b": _imgs(1, (8, 8), value=255)})
    raw = load_source(data_cfg(source=f"folder:{tmp_path / 'imgs'}"))
    assert len(raw.x) == 8 and len(raw.x_test) == 3 and list(raw.y_test) == [0, 0, 1]


def test_source_hash_changes_with_content(tmp_path: Path) -> None:
    x, y = toy_images()
    a = load_source(data_cfg(source=f"npz:{write_npz(tmp_path / 'a.npz', x=x, y=y)}")).source_hash
    x[0, 0, 0, 0] ^= 1
    b = load_source(data_cfg(source=f"npz:{write_npz(tmp_path / 'b.npz', x=x, y=y)}")).source_hash
    assert a != b


def test_torchvision_without_network_says_how_to_use_npz_or_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_source(data_cfg(source="torchvision:mnist", cache_dir=str(tmp_path)))
    assert "npz:<path>" in str(err.value) and "folder:<path>" in str(err.value)


def test_prepare_is_deterministic_and_hashes_content(tmp_path: Path) -> None:
    params = parse_params({})
    a = prepare.run(params, tmp_path / "a")
    b = prepare.run(params, tmp_path / "b")
    assert a["data_hash"] == b["data_hash"]
    ds = load_prepared(tmp_path / "a")
    idx = np.concatenate([ds.splits[s] for s in ("train", "val", "test")])
    assert len(np.unique(idx)) == len(ds.y) == 1797  # disjoint and complete
    assert ds.meta["counts"] == {"train": 1293, "val": 144, "test": 360}
    assert 0.0 < ds.meta["mean"][0] < 1.0 and ds.meta["std"][0] > 0.0


def test_bad_source_leaves_existing_output_untouched(tmp_path: Path) -> None:
    good = prepare.run(parse_params({}), tmp_path / "prepared")
    before = {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    bad = parse_params({"data": {"source": f"npz:{tmp_path / 'missing.npz'}"}})
    with pytest.raises(DataError, match=r"missing\.npz"):
        prepare.run(bad, tmp_path / "prepared")
    assert {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()} == before
    assert load_prepared(tmp_path / "prepared").meta["data_hash"] == good["data_hash"]


# ---- faithful decoding: the pixels, not only the exit code (issue 13) ---------------------------


def _save_tree(root: Path, arrays: dict[str, list[tuple[str, Image.Image]]]) -> Path:
    for cls, items in arrays.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, img in items:
            img.save(root / cls / name)
    return root


def _ramp16() -> np.ndarray:
    return (np.arange(64, dtype=np.int64).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520


def test_16bit_png_and_tiff_are_scaled_by_their_range_not_clipped(tmp_path: Path) -> None:
    ramp = _ramp16()
    root = _save_tree(
        tmp_path / "imgs",
        {
            "a": [(f"{i}.png", Image.fromarray(ramp)) for i in range(3)],
            "b": [(f"{i}.tif", Image.fromarray(65535 - ramp)) for i in range(3)],
        },
    )
    assert Image.open(root / "a" / "0.png").mode == "I;16"
    raw = load_source(data_cfg(source=f"folder:{root}"))
    expected_a = np.rint(ramp * (255 / 65535)).astype(np.uint8)
    expected_b = np.rint((65535 - ramp) * (255 / 65535)).astype(np.uint8)
    np.testing.assert_array_equal(raw.x[0, 0], expected_a)
    np.testing.assert_array_equal(raw.x[3, 0], expected_b)
    assert len(np.unique(raw.x[0])) == 64  # every level kept (clipping gave 0 and 255 only)


def test_float_tiff_in_unit_range_is_scaled_and_outside_it_refused(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.float32).reshape(8, 8) / 63.0).astype(np.float32)
    root = _save_tree(
        tmp_path / "imgs",
        {
            "a": [(f"{i}.tif", Image.fromarray(ramp)) for i in range(3)],
            "b": [(f"{i}.tif", Image.fromarray(1.0 - ramp)) for i in range(3)],
        },
    )
    assert Image.open(root / "a" / "0.tif").mode == "F"
    raw = load_source(data_cfg(source=f"folder:{root}"))
    np.testing.assert_array_equal(raw.x[0, 0], np.rint(ramp.astype(np.float64) * 255).astype(np.uint8))
    assert raw.x[0, 0, 4, 0] == 130 and len(np.unique(raw.x[0])) == 64  # 32/63*255 = 129.5 -> 130

    Image.fromarray(ramp * 1000.0).save(root / "b" / "9.tif")
    with pytest.raises(DataError) as err:
        load_source(data_cfg(source=f"folder:{root}"))
    assert "9.tif" in str(err.value) and "values 0..1000" in str(err.value) and "[0, 1]" in str(err.value)


def test_32bit_integer_images_within_16_bits_are_scaled_else_refused(tmp_path: Path) -> None:
    ramp = _ramp16().astype(np.int32)
    root = _save_tree(
        tmp_path / "imgs",
        {"a": [(f"{i}.tif", Image.fromarray(ramp)) for i in range(3)], "b": _imgs_named(3, 40)},
    )
    assert Image.open(root / "a" / "0.tif").mode == "I"
    raw = load_source(data_cfg(source=f"folder:{root}"))
    np.testing.assert_array_equal(raw.x[0, 0], np.rint(ramp * (255 / 65535)).astype(np.uint8))
    Image.fromarray(ramp * 100).save(root / "a" / "9.tif")
    with pytest.raises(DataError, match=r"9\.tif: 32-bit integer image with values 0\.\.6552000"):
        load_source(data_cfg(source=f"folder:{root}"))


def _imgs_named(n: int, value: int) -> list[tuple[str, Image.Image]]:
    return [(f"g{i}.png", Image.new("L", (8, 8), value)) for i in range(n)]


def _stroke_alpha() -> np.ndarray:
    alpha = np.zeros((8, 8), np.uint8)
    alpha[2:6, 3:5] = 255  # the drawing
    alpha[0, 0] = 128  # a half-transparent pixel
    return alpha


def test_rgba_drawn_in_its_alpha_channel_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # black ink: all the content is in the alpha channel
    rgba[..., 3] = _stroke_alpha()
    root = _save_tree(
        tmp_path / "imgs",
        {"a": [(f"{i}.png", Image.fromarray(rgba, "RGBA")) for i in range(3)], "b": _imgs_named(3, 200)},
    )
    raw = load_source(data_cfg(source=f"folder:{root}"))
    assert raw.x.shape == (6, 1, 8, 8)  # gray content stays one channel, so it mixes with L images
    expected = np.full((8, 8), 255, np.uint8)
    expected[2:6, 3:5] = 0
    expected[0, 0] = 127  # 255 * (1 - 128/255)
    np.testing.assert_array_equal(raw.x[0, 0], expected)  # was all zero: alpha dropped


def test_alpha_black_background_and_colour_content(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red ink
    rgba[..., 3] = _stroke_alpha()
    root = _save_tree(
        tmp_path / "imgs",
        {
            "a": [(f"{i}.png", Image.fromarray(rgba, "RGBA")) for i in range(3)],
            "b": [(f"{i}.png", Image.new("RGB", (8, 8), (0, 0, 90))) for i in range(3)],
        },
    )
    raw = load_source(data_cfg(source=f"folder:{root}", alpha="black"))
    assert raw.x.shape == (6, 3, 8, 8)
    red = raw.x[0, 0]
    assert red[3, 3] == 200 and red[7, 7] == 0 and red[0, 0] == 100  # 200 * 128/255 = 100.4
    assert raw.x[0, 1].max() == 0 and raw.x[0, 2].max() == 0


def test_content_that_vanishes_on_the_background_or_alpha_refuse_is_refused(tmp_path: Path) -> None:
    rgba = np.full((8, 8, 4), 255, np.uint8)  # white ink on transparent: gone over white
    rgba[..., 3] = _stroke_alpha()
    root = _save_tree(
        tmp_path / "imgs",
        {"a": [(f"{i}.png", Image.fromarray(rgba, "RGBA")) for i in range(3)], "b": _imgs_named(3, 9)},
    )
    with pytest.raises(DataError) as err:
        load_source(data_cfg(source=f"folder:{root}"))
    assert (
        "0.png" in str(err.value) and "vanishes" in str(err.value) and "data.alpha: black" in str(err.value)
    )
    raw = load_source(data_cfg(source=f"folder:{root}", alpha="black"))
    assert raw.x[0, 0, 3, 3] == 255 and raw.x[0, 0, 7, 7] == 0
    with pytest.raises(DataError, match=r"data\.alpha is refuse; set data\.alpha: white or black"):
        load_source(data_cfg(source=f"folder:{root}", alpha="refuse"))


def test_gray_alpha_and_transparent_palette_images(tmp_path: Path) -> None:
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 1] = _stroke_alpha()
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 255, 255, 0, 0, 0])  # index 0 white, 1 black
    pal.paste(1, (3, 2, 5, 6))
    pal.info["transparency"] = 0  # the white background is transparent
    root = _save_tree(
        tmp_path / "imgs",
        {
            "a": [(f"{i}.png", Image.fromarray(la, "LA")) for i in range(3)],
            "b": [(f"p{i}.png", pal) for i in range(3)],
        },
    )
    raw = load_source(data_cfg(source=f"folder:{root}"))  # white background
    assert raw.x[0, 0, 3, 3] == 0 and raw.x[0, 0, 7, 7] == 255 and raw.x[0, 0, 0, 0] == 127
    assert raw.x[3, 0, 3, 3] == 0 and raw.x[3, 0, 0, 0] == 255
    with pytest.raises(DataError, match="vanishes over a black background"):  # black ink on black
        load_source(data_cfg(source=f"folder:{root}", alpha="black"))


def test_labels_1_to_10_are_remapped_recorded_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    x, y = toy_images(n_per_class=12, classes=10, size=10)
    path = write_npz(tmp_path / "d.npz", x=x, y=y + 1)
    params = parse_params({"data": {"source": f"npz:{path}"}})
    result = prepare.run(params, tmp_path / "prepared")
    ds = load_prepared(tmp_path / "prepared")
    assert ds.classes == [str(i) for i in range(1, 11)] and result["classes"] == 10  # not an 11-way head
    assert sorted(np.unique(ds.y).tolist()) == list(range(10))
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["label_map"] == {str(i + 1): i for i in range(10)}
    raw = load_source(params.data)
    np.testing.assert_array_equal(raw.y, y)  # image i keeps its class: original label y[i] + 1
    np.testing.assert_array_equal(raw.x, x)
    assert "remapped (original -> class index): 1->0, 2->1" in capsys.readouterr().err


def test_class_names_with_an_absent_class_and_a_stray_label(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=5, classes=3)
    names = np.array(["cat", "dog", "owl", "emu"])
    raw = load_source(
        data_cfg(
            source=f"npz:{write_npz(tmp_path / 'd.npz', x=x, y=np.where(y == 2, 3, y), class_names=names)}"
        )
    )
    assert raw.classes == ["cat", "dog", "emu"] and raw.label_map == {"0": 0, "1": 1, "3": 2}
    assert raw.y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    stray = y.copy()
    stray[0] = 999  # one mistyped label no longer makes a 1000-class dataset
    with pytest.raises(DataError) as err:
        load_source(data_cfg(source=f"npz:{write_npz(tmp_path / 's.npz', x=x, y=stray)}"))
    assert "['999'] have fewer than 3 training images" in str(err.value)


def test_npy_source_labels_are_remapped_too(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=4, classes=3)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "x.npy", x)
    np.save(tmp_path / "npy" / "y.npy", y * 10 + 5)
    raw = load_source(data_cfg(source=f"npy:{tmp_path / 'npy'}"))
    assert raw.classes == ["5", "15", "25"] and raw.y.tolist() == y.tolist()


def test_symlink_loop_and_broken_link_are_named_as_such(tmp_path: Path) -> None:
    import os

    root = _save_tree(tmp_path / "imgs", {"a": _imgs_named(3, 1), "b": _imgs_named(3, 250)})
    os.symlink(root / "a" / "loop.png", root / "a" / "loop.png")
    with pytest.raises(DataError) as err:
        load_source(data_cfg(source=f"folder:{root}"))
    assert "loop.png: symlink loop" in str(err.value) and "cannot be decoded" not in str(err.value)
    (root / "a" / "loop.png").unlink()
    os.symlink(tmp_path / "gone.png", root / "b" / "x.png")
    with pytest.raises(DataError, match=r"x\.png: broken symlink \(it points to .*gone\.png"):
        load_source(data_cfg(source=f"folder:{root}"))
    (root / "b" / "x.png").unlink()
    os.symlink(root / "c", root / "c")  # a class folder that is a loop
    with pytest.raises(DataError, match="imgs/c: symlink loop"):
        load_source(data_cfg(source=f"folder:{root}"))
