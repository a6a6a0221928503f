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
    with pytest.raises(DataError, match="set data.channels"):
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
    with pytest.raises(DataError, match="missing.npz"):
        prepare.run(bad, tmp_path / "prepared")
    assert {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()} == before
    assert load_prepared(tmp_path / "prepared").meta["data_hash"] == good["data_hash"]
