"""Property-based tests: whatever bytes or arrays a user hands in, the loaders either accept them
or raise the project's own DataError — never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from aepipe.config import parse_params
from aepipe.data.sources import load_source
from aepipe.errors import DataError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cfg(source: str, **kw):
    return parse_params({"data": {"source": source, **kw}}).data


def _valid_png(size: int = 8) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("L", (size, size), 128).save(buf, format="PNG")
    return buf.getvalue()


@SETTINGS
@given(
    junk=st.binary(min_size=0, max_size=4096),
    suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".tif"]),
    keep_header=st.booleans(),
)
def test_random_bytes_as_image_files_only_raise_data_error(
    junk: bytes, suffix: str, keep_header: bool
) -> None:
    if keep_header:  # a real header followed by garbage exercises the decoders further
        junk = _valid_png()[:64] + junk
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for cls in ("a", "b"):
            (root / cls).mkdir()
            for i in range(3):
                (root / cls / f"{i}.png").write_bytes(_valid_png())
        (root / "a" / f"junk{suffix}").write_bytes(junk)
        try:
            raw = load_source(_cfg(f"folder:{root}", image_size=[8, 8], channels=1))
        except DataError:
            return
        assert raw.x.dtype == np.uint8 and raw.x.shape[1:] == (1, 8, 8)


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=12),
    elements=None,
)


@SETTINGS
@given(
    x=arrays,
    y=hnp.arrays(
        dtype=st.sampled_from([np.int64, np.float64, np.uint8]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
    ),
)
def test_random_arrays_in_npz_only_raise_data_error(x: np.ndarray, y: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        np.savez(path, x=x, y=y)
        try:
            raw = load_source(_cfg(f"npz:{path}"))
        except DataError:
            return
        assert raw.x.dtype == np.uint8 and raw.x.ndim == 4 and len(raw.x) == len(raw.y)
        assert raw.y.min() >= 0


@SETTINGS
@given(blob=st.binary(max_size=2048))
def test_random_bytes_as_npz_only_raise_data_error(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        path.write_bytes(blob)
        try:
            load_source(_cfg(f"npz:{path}"))
        except DataError:
            return
        raise AssertionError("random bytes were accepted as a dataset")
