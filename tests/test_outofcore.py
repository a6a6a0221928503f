"""Out-of-core data: the npy: source, the split-contiguous prepared layout, block file I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aepipe.config import parse_params
from aepipe.data.blockio import NpyRows, NpyWriter, gather_rows, read_block
from aepipe.data.prepared import channel_stats, load_prepared
from aepipe.data.sources import load_source
from aepipe.errors import DataError
from aepipe.stages import prepare
from tests.conftest import toy_images, write_npz


def labelled_ids(n: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first two pixels spell their source row, and cyclic labels."""
    x = np.random.default_rng(0).integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)  # N x H x W x C
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return x, np.arange(n) % classes


def ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(np.int64) * 256 + x[:, 0, 0, 1]


def test_npy_source_prepares_split_by_split_with_the_source_rows(tmp_path: Path) -> None:
    x, y = labelled_ids(600)
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "x.npy", x[:500])
    np.save(src / "y.npy", y[:500])
    np.save(src / "x_test.npy", x[500:])
    np.save(src / "y_test.npy", y[500:])
    raw = load_source(parse_params({"data": {"source": f"npy:{src}"}}).data)
    assert isinstance(raw.x.base, np.memmap) or isinstance(raw.x, np.memmap)  # nothing read but headers
    assert raw.x.shape == (500, 1, 6, 6)

    result = prepare.run(parse_params({"data": {"source": f"npy:{src}"}}), tmp_path / "prepared")
    ds = load_prepared(tmp_path / "prepared", mmap=True)
    assert result["counts"] == {"train": 450, "val": 50, "test": 100}
    start = 0
    for split in ("train", "val", "test"):  # contiguous ranges, in this order, source rows ascending
        assert ds.span(split) == (start, start + result["counts"][split])
        images, labels = ds.split(split)
        assert isinstance(images, np.memmap)  # a slice of the map: nothing loaded
        rows = ids(images)
        assert np.all(np.diff(rows) > 0) and np.array_equal(labels, rows % 3)
        start += len(rows)
    assert sorted(np.concatenate([ids(ds.split(s)[0]) for s in ("train", "val", "test")]).tolist()) == list(
        range(600)
    )
    assert np.array_equal(ids(ds.split("test")[0]), np.arange(500, 600))  # the given test split is kept
    mean, std = channel_stats(np.asarray(ds.split("train")[0]).copy())
    assert (ds.meta["mean"], ds.meta["std"]) == (mean, std)
    np.testing.assert_array_equal(ds.rows("val").read(0, 50), ds.split("val")[0])


def test_npy_source_refusals_name_the_file_and_the_fix(tmp_path: Path) -> None:
    def refused(files: dict[str, np.ndarray], needle: str) -> None:
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        for name, arr in files.items():
            np.save(d / name, arr)
        with pytest.raises(DataError, match=needle) as err:
            load_source(parse_params({"data": {"source": f"npy:{d}"}}).data)
        assert str(d) in str(err.value)

    x, y = toy_images()
    refused({"x.npy": x}, "missing y.npy")
    refused({"x.npy": x.astype(np.float32), "y.npy": y}, "must hold uint8")
    refused({"x.npy": x, "y.npy": y[:-1]}, "same length")
    refused({"x.npy": x, "y.npy": y, "x_test.npy": x}, "provide both or neither")
    refused({"x.npy": x[:, 0, :2], "y.npy": y}, "at least 4×4")
    refused({"x.npy": np.array([object()] * len(y)), "y.npy": y}, "pickled")


def test_npy_and_npz_sources_prepare_the_same_dataset(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=20)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy/x.npy", x)
    np.save(tmp_path / "npy/y.npy", y)
    a = prepare.run(parse_params({"data": {"source": f"npy:{tmp_path / 'npy'}"}}), tmp_path / "a")
    b = prepare.run(
        parse_params({"data": {"source": f"npz:{write_npz(tmp_path / 'd.npz', x=x, y=y)}"}}), tmp_path / "b"
    )
    for name in ("x.npy", "y.npy", "splits.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["data_hash"] == b["data_hash"]


def test_block_writer_and_reader_round_trip_any_range(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, size=(1000, 3, 5, 4), dtype=np.uint8)
    with NpyWriter(tmp_path / "x.npy", data.shape, np.uint8) as w:
        for lo in range(0, 1000, 77):
            w.append(data[lo : lo + 77])
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), data)  # a normal .npy file
    rows = NpyRows(tmp_path / "x.npy", 100, 900)
    assert rows.shape == (800, 3, 5, 4) and rows.nbytes == 800 * 60
    np.testing.assert_array_equal(rows.read(10, 20), data[110:120])
    np.testing.assert_array_equal(np.concatenate([b.copy() for _, b in rows.blocks(300)]), data[100:900])
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    index = np.array([3, 4, 90, 91, 500, 999])
    np.testing.assert_array_equal(np.concatenate(list(gather_rows(mapped, index, 50))), data[index])
    assert not isinstance(read_block(mapped, 0, 5), np.memmap)


def test_a_short_write_or_truncated_file_is_caught(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="2 rows written, 3 declared"),
        NpyWriter(tmp_path / "x.npy", (3, 2), np.uint8) as w,
    ):
        w.append(np.zeros((2, 2), dtype=np.uint8))
    np.save(tmp_path / "y.npy", np.zeros((10, 4), dtype=np.uint8))
    (tmp_path / "y.npy").write_bytes((tmp_path / "y.npy").read_bytes()[:-8])
    with pytest.raises(DataError, match="truncated"):
        NpyRows(tmp_path / "y.npy")
