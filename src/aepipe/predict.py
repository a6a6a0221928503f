"""``aepipe predict``: classify image files or an .npz with a registered (or logged) model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aepipe.errors import DataError, TrackingError


def model_input_shape(model: Any) -> tuple[int, int, int]:
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec():
        raise TrackingError("the model has no tensor input signature; it was not logged by aepipe")
    shape = tuple(int(s) for s in schema.inputs[0].shape[1:])
    if len(shape) != 3:
        raise TrackingError(f"the model's input signature {schema.inputs[0].shape} is not N×C×H×W")
    return shape  # type: ignore[return-value]


def load_images(paths: list[str], shape: tuple[int, int, int]) -> tuple[list[str], np.ndarray]:
    """Image files (resized to the model's H×W, converted to its channels) or .npz arrays."""
    from PIL import Image, UnidentifiedImageError

    from aepipe.data.sources import _images_from_array

    c, h, w = shape
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise DataError(f"{p}: file not found")
        if p.suffix.lower() == ".npz":
            try:
                with np.load(p, allow_pickle=False) as npz:
                    key = next((k for k in ("x", "x_test", "images") if k in npz.files), None)
                    if key is None:
                        raise DataError(f"{p}: no x / x_test / images array; found {sorted(npz.files)}")
                    x = _images_from_array(npz[key], p, key)
            except (ValueError, OSError) as exc:
                raise DataError(f"{p}: not a readable .npz of images ({exc})") from None
            if x.shape[1:] != shape:
                raise DataError(f"{p}: images are {x.shape[1:]} but the model expects {shape} (C, H, W)")
            names += [f"{p.name}[{i}]" for i in range(len(x))]
            arrays.append(x)
            continue
        try:
            with Image.open(p) as img:
                img = img.convert("L" if c == 1 else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(
                f"{p}: cannot be decoded as an image ({exc.__class__.__name__}); pass PNG/JPEG files or an .npz"
            ) from None
        names.append(p.name)
        arrays.append((arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))[None])
    if not arrays:
        raise DataError("no images given")
    return names, np.ascontiguousarray(np.concatenate(arrays))


def predict(model_uri: str, paths: list[str]) -> list[dict[str, Any]]:
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise TrackingError(f"cannot load model {model_uri!r}: {str(exc)[:300]}") from None
    names, x = load_images(paths, model_input_shape(model))
    out = model.predict(x)
    return [
        {
            "input": n,
            "class": str(c),
            "probability": float(max(p)),
            "probabilities": [round(float(v), 6) for v in p],
        }
        for n, c, p in zip(names, out["class"], out["probabilities"])
    ]
