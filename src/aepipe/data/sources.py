"""Dataset sources: ``data.source`` -> images (N, C, H, W) uint8 + integer labels.

Every loader validates fully before returning, so `prepare` never writes a partial dataset, and
every error names the file (or key) at fault and the fix.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from aepipe.config import DataConfig
from aepipe.errors import DataError
from aepipe.io import sha256_file

if TYPE_CHECKING:  # PIL and torchvision are imported where they are used (import time)
    import torchvision
    from PIL.Image import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
MAX_CLASSES = 1000


@dataclass
class RawDataset:
    x: np.ndarray  # (N, C, H, W) uint8, in memory or (npy: source) memory-mapped
    y: np.ndarray  # (N,) int64 in [0, len(classes))
    classes: list[str] | None  # None: named by the label values (npz/npy without class_names)
    source_hash: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    # original label -> class index, when the source's labels were not already 0..K-1 with
    # every class present (recorded in meta.json by prepare, and printed)
    label_map: dict[str, int] | None = None


def load_source(cfg: DataConfig) -> RawDataset:
    kind, _, arg = cfg.source.partition(":")
    raw = LOADERS[kind](arg, cfg)
    remap_labels(raw, cfg.source)
    check_labels(raw, cfg.source)
    return raw


# ---- digits ---------------------------------------------------------------------------------


def load_digits_source(_: str, cfg: DataConfig) -> RawDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 images with values 0..16 -> uint8 0..255.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    return RawDataset(x, y, [str(c) for c in bunch.target_names], _hash_arrays(x, y))


# ---- npz ------------------------------------------------------------------------------------


def load_npz_source(path_str: str, cfg: DataConfig) -> RawDataset:
    path = Path(path_str)
    if not path.is_file():
        raise DataError(
            f"{path}: data.source file not found; check the path in params.yaml (data.source: npz:<path>)"
        )
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz archive (no zip structure); write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{path}: holds object (pickled) arrays, which are refused; save plain numeric arrays with "
                "np.savez"
            ) from None
        raise DataError(f"{path}: not a readable .npz archive ({exc}); write it with numpy.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc}); write it with numpy.savez") from None

    keys = set(arrays)
    if {"x_train", "y_train"} <= keys:
        x = _images_from_array(arrays["x_train"], path, "x_train")
        y = _labels_from_array(arrays["y_train"], len(x), path, "y_train", "x_train")
        x_test = y_test = None
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: has only one of x_test / y_test; provide both or neither")
        if "x_test" in keys:
            x_test = _images_from_array(arrays["x_test"], path, "x_test")
            y_test = _labels_from_array(arrays["y_test"], len(x_test), path, "y_test", "x_test")
            if x_test.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{path}: x_test images are {x_test.shape[1:]} but x_train images are {x.shape[1:]}; "
                    "they must match"
                )
    elif {"x", "y"} <= keys:
        x = _images_from_array(arrays["x"], path, "x")
        y = _labels_from_array(arrays["y"], len(x), path, "y", "x")
        x_test = y_test = None
    else:
        raise DataError(
            f"{path}: missing keys; found {sorted(keys) or 'none'}, need x_train + y_train (+ x_test + "
            "y_test) in the Keras layout, or x + y"
        )

    all_labels = y if y_test is None else np.concatenate([y, y_test])
    if "class_names" in keys:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "UiS":
            raise DataError(f"{path}: class_names must be a 1-D array of strings")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        if all_labels.size and all_labels.max() >= len(classes):
            raise DataError(
                f"{path}: label {int(all_labels.max())} is out of range for {len(classes)} class_names; "
                f"labels must be 0..{len(classes) - 1}"
            )
    else:
        classes = None  # named by their label values (remap_labels)
    return RawDataset(x, y, classes, sha256_file(path), x_test, y_test)


def _images_from_array(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Accept (N,H,W), (N,H,W,C) Keras or (N,C,H,W) with C in {1,3}; uint8, or float in [0, 1]."""
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(
                f"{path}: {key} contains NaN or inf; clean the array (finite floats in [0, 1] or uint8 0-255)"
            )
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{path}: {key} is float with values {lo:.3g}..{hi:.3g}; float images must lie in [0, 1] (or "
                "store uint8 0-255)"
            )
        arr = np.rint(arr * 255.0).astype(np.uint8)
    elif arr.dtype.kind in "iu":
        if arr.dtype != np.uint8:
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{path}: {key} is {arr.dtype} with values {lo}..{hi}; integer images must lie in 0..255"
                )
            arr = arr.astype(np.uint8)
    else:
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; images must be uint8 (0-255) or float (0-1)")

    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[1] not in (1, 3) and arr.shape[3] in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.shape[1] not in (1, 3):
            raise DataError(
                f"{path}: {key} has shape {arr.shape}; expected N×H×W, N×H×W×C or N×C×H×W with C = 1 or 3"
            )
    else:
        raise DataError(
            f"{path}: {key} has shape {arr.shape}; expected N×H×W, N×H×W×C or N×C×H×W with C = 1 or 3"
        )
    if len(arr) == 0:
        raise DataError(f"{path}: {key} holds no images")
    if min(arr.shape[2:]) < 4:
        raise DataError(f"{path}: {key} images are {arr.shape[2]}×{arr.shape[3]}; at least 4×4 is needed")
    return np.ascontiguousarray(arr)


def _labels_from_array(arr: np.ndarray, n: int, path: Path, key: str, images_key: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{path}: {key} has shape {arr.shape}; labels must be a 1-D array of class indices")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.rint(arr)):
            raise DataError(
                f"{path}: {key} holds non-integer values; labels must be integer class indices 0..K-1"
            )
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; labels must be integer class indices 0..K-1")
    if len(arr) != n:
        raise DataError(
            f"{path}: {key} has {len(arr)} labels but {images_key} has {n} images; they must have the same "
            "length"
        )
    if arr.size and arr.min() < 0:
        raise DataError(
            f"{path}: {key} has label {int(arr.min())}; labels are out of range, they must be class indices "
            "0..K-1 (a negative label often marks an unlabelled image: drop those rows)"
        )
    if arr.size and arr.max() >= 2**62:
        raise DataError(f"{path}: {key} has label {int(arr.max())}; labels must be class indices 0..K-1")
    return arr.astype(np.int64)


# ---- npy directory (memory-mapped, for data larger than RAM) ---------------------------------


def load_npy_source(path_str: str, cfg: DataConfig) -> RawDataset:
    """``<dir>/x.npy`` + ``y.npy`` (+ ``x_test.npy`` + ``y_test.npy``), images memory-mapped.

    Nothing is read here but the headers and the labels: ``prepare`` copies the images block by
    block (:func:`aepipe.data.prepared.write_prepared`), so the source may exceed RAM. Images
    must already be uint8 (N×H×W, N×H×W×C or N×C×H×W).
    """
    root = Path(path_str)
    if not root.is_dir():
        raise DataError(
            f"{root}: data.source folder not found; check the path in params.yaml (data.source: npy:<dir "
            "with x.npy and y.npy>)"
        )
    missing = [f for f in ("x.npy", "y.npy") if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"{root}: missing {', '.join(missing)}; an npy: source holds x.npy (uint8 images) and y.npy "
            "(labels)"
        )
    if (root / "x_test.npy").is_file() != (root / "y_test.npy").is_file():
        raise DataError(f"{root}: has only one of x_test.npy / y_test.npy; provide both or neither")
    x = _mapped_images(root / "x.npy")
    y = _labels_from_array(_load_npy(root / "y.npy"), len(x), root / "y.npy", "y", "x")
    x_test = y_test = None
    if (root / "x_test.npy").is_file():
        x_test = _mapped_images(root / "x_test.npy")
        y_test = _labels_from_array(
            _load_npy(root / "y_test.npy"), len(x_test), root / "y_test.npy", "y_test", "x_test"
        )
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{root}: x_test.npy images are {x_test.shape[1:]} but x.npy images are {x.shape[1:]}; they "
                "must match"
            )
    classes = None  # named by their label values (remap_labels)
    h = hashlib.sha256()
    for name in ("x.npy", "y.npy", "x_test.npy", "y_test.npy"):
        if (root / name).is_file():
            h.update(f"{name}:{sha256_file(root / name)}".encode())
    return RawDataset(x, y, classes, h.hexdigest(), x_test, y_test)


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        # a .npy file holds one array (np.load's Any covers the archives of .npz too)
        arr: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise DataError(
                f"{path}: holds an object (pickled) array, which is refused; save a plain numeric array with "
                "np.save"
            ) from None
        raise DataError(f"{path}: not a readable .npy file ({exc}); write it with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); write it with numpy.save") from None
    return arr


def _mapped_images(path: Path) -> np.ndarray:
    """(N, C, H, W) uint8 view of a memory-mapped file (a transposed view for N×H×W×C)."""
    arr = _load_npy(path, mmap=True)
    if arr.dtype != np.uint8:
        raise DataError(
            f"{path}: images have dtype {arr.dtype}; an npy: source must hold uint8 0-255 (convert it, or "
            "use an npz: source)"
        )
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[1] not in (1, 3) and arr.shape[3] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise DataError(f"{path}: has shape {arr.shape}; expected N×H×W, N×H×W×C or N×C×H×W with C = 1 or 3")
    if len(arr) == 0:
        raise DataError(f"{path}: holds no images")
    if min(arr.shape[2:]) < 4:
        raise DataError(f"{path}: images are {arr.shape[2]}×{arr.shape[3]}; at least 4×4 is needed")
    return arr


# ---- image folder ---------------------------------------------------------------------------


def load_folder_source(path_str: str, cfg: DataConfig) -> RawDataset:
    """``root/<class>/*.png``; or ``root/train/<class>/...`` + ``root/test/<class>/...``.

    The second layout keeps its own test split.
    """
    root = Path(path_str)
    if not root.is_dir():
        raise DataError(
            f"{root}: data.source folder not found; check the path in params.yaml (data.source: "
            "folder:<path>)"
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _class_dirs(root / "train")
        test_classes = _class_dirs(root / "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(
                f"{root / 'test'}: classes {unknown} have no training folder under {root / 'train'}; add "
                "them there or remove them"
            )
        files, y = _list_images(root / "train", classes)
        test_files, y_test = _list_images(root / "test", classes, allow_empty_class=True)
    else:
        classes = _class_dirs(root)
        files, y = _list_images(root, classes)
        test_files, y_test = [], np.zeros(0, dtype=np.int64)

    images = _read_images(files + test_files, cfg)
    x = images[: len(files)]
    h = hashlib.sha256()
    for f in sorted(files + test_files):
        h.update(str(f.relative_to(root)).encode())
        h.update(sha256_file(f).encode())
    if test_files:
        return RawDataset(x, y, classes, h.hexdigest(), images[len(files) :], y_test)
    return RawDataset(x, y, classes, h.hexdigest())


def _class_dirs(root: Path) -> list[str]:
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    for p in entries:
        _check_link(p)
    classes = [p.name for p in entries if p.is_dir()]
    if not classes:
        raise DataError(f"{root}: no class subfolders; put images in {root}/<class name>/*.png")
    return classes


def _check_link(p: Path) -> None:
    """A symlink that loops or points nowhere is named as such (not as an undecodable image)."""
    if not p.is_symlink():
        return
    try:
        p.resolve(strict=True)
    except FileNotFoundError:
        raise DataError(
            f"{p}: broken symlink (it points to {os.readlink(p)}, which does not exist); fix or remove the "
            "link"
        ) from None
    except (RuntimeError, OSError):  # a loop: RuntimeError up to Python 3.12, OSError(ELOOP) after
        raise DataError(
            f"{p}: symlink loop (it points to {os.readlink(p)}, which leads back to itself); "
            "point it at a real file or folder, or remove it"
        ) from None


def _list_images(
    root: Path, classes: list[str], allow_empty_class: bool = False
) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for idx, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        for p in entries:
            _check_link(p)
            if p.is_dir():
                raise DataError(
                    f"{p}: nested folder inside class folder {folder}; keep one level: <root>/<class>/<image>"
                )
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"{p}: not an image file (suffix {p.suffix or 'none'}); remove it from {folder} or "
                    "convert it to PNG/JPEG"
                )
        if not entries and not allow_empty_class:
            raise DataError(f"{folder}: class folder is empty; add images or remove the folder")
        files += entries
        labels += [idx] * len(entries)
    return files, np.asarray(labels, dtype=np.int64)


GRAY_MODES = {"1", "L", "I", "F"}
ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
Alpha = Literal["white", "black", "refuse"]


def load_image(
    f: Path, channels: int, size: tuple[int, int] | None, alpha: Alpha, for_predict: bool = False
) -> np.ndarray:
    """One image file as uint8 (C, H, W), exactly as ``prepare`` reads it from a folder source:
    decoded by :func:`_decode`, then conformed by :func:`_conform` to ``channels`` and ``size``.

    ``aepipe predict`` reads image files with this, so a model sees the pixels it was trained
    on; ``for_predict`` makes the errors name ``--alpha`` instead of ``data.alpha``.
    """
    return _conform(_decode(f, alpha, for_predict), channels, size)


def _decode(f: Path, alpha: Alpha, for_predict: bool = False) -> np.ndarray:
    """One image file as uint8 (H, W) grayscale or (H, W, 3) RGB, without losing its content:

    - 16-bit images (``I;16*``, and 32-bit ``I`` holding 0..65535) are scaled by 255/65535;
    - float images (``F``) must hold values in [0, 1] and are scaled by 255;
    - images with transparency are composited over ``alpha`` (``data.alpha``, or predict's
      ``--alpha``: white or black), or refused; an image whose content would vanish on that
      background (drawn only in its alpha channel, in the background's colour) is refused with
      the other background named;
    - everything else is converted as Pillow does (palette, CMYK, YCbCr -> RGB; 1 -> L).
    Rounding is to nearest (``np.rint``), never truncation, and nothing is clipped.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as img:
            img.load()
            return _to_uint8(img, f, alpha, for_predict)
    except DataError:
        raise
    except PermissionError:
        raise DataError(
            f"{f}: cannot be read (permission denied); fix its permissions or remove it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        fix = "pass PNG/JPEG files, .npy or .npz" if for_predict else "replace or remove the file"
        raise DataError(f"{f}: cannot be decoded as an image ({exc.__class__.__name__}); {fix}") from None


def _to_uint8(img: Image, f: Path, alpha: Alpha, for_predict: bool) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        return _scaled(np.asarray(img), 65535.0)
    if mode == "I":
        a = np.asarray(img)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DataError(
                f"{f}: 32-bit integer image with values {lo}..{hi}, which has no known range; "
                "save it as 8- or 16-bit (0..65535) or as float in [0, 1]"
            )
        return _scaled(a, 65535.0)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DataError(
                f"{f}: float image contains NaN or inf; float images must hold finite values in [0, 1]"
            )
        flo, fhi = float(a.min()), float(a.max())
        if flo < 0.0 or fhi > 1.0:
            raise DataError(
                f"{f}: float image with values {flo:.4g}..{fhi:.4g}; float images must hold values in [0, 1] "
                "(divide by their maximum, or save 8- or 16-bit integers)"
            )
        return _scaled(a, 1.0)
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        return _composite(img, f, alpha, for_predict)
    if mode in GRAY_MODES or (mode == "P" and _palette_is_gray(img)):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _scaled(a: np.ndarray, full: float) -> np.ndarray:
    return np.rint(a.astype(np.float64) * (255.0 / full)).astype(np.uint8)


def _composite(img: Image, f: Path, over: Alpha, for_predict: bool) -> np.ndarray:
    gray = img.mode in ("LA", "La")
    rgba = np.asarray(img.convert("LA" if gray else "RGBA"), dtype=np.float64)
    color, alpha = rgba[..., :-1], rgba[..., -1:] / 255.0
    # how the setting is named in a message, and how to set it to another value
    setting, change = ("--alpha", "pass --alpha") if for_predict else ("data.alpha", "set data.alpha:")
    training = " (it must match data.alpha of the training run)" if for_predict else ""
    if over == "refuse":
        if alpha.min() < 1.0:
            raise DataError(
                f"{f}: has transparent pixels and {setting} is refuse; {change} white or black{training} "
                "to composite it over that background, or save it without an alpha channel"
            )
        alpha = np.ones_like(alpha)
    background = 255.0 if over != "black" else 0.0
    out = np.rint(color * alpha + background * (1.0 - alpha)).astype(np.uint8)
    if out.min() == out.max() and alpha.min() < alpha.max():
        other = "black" if over == "white" else "white"
        shown = f"--alpha {over}" if for_predict else f"data.alpha: {over}"
        raise DataError(
            f"{f}: its content is only in the alpha channel and vanishes over a {over} background "
            f"({shown}); {change} {other}{training}"
        )
    if gray:
        return out[..., 0]
    if (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all():
        return out[..., 0]  # gray content: a grayscale image, as a gray palette is
    return out


def _read_images(files: list[Path], cfg: DataConfig) -> np.ndarray:
    decoded = [(f, _decode(f, cfg.alpha)) for f in files]

    channels = cfg.channels
    if channels is None:
        gray = next((f for f, a in decoded if a.ndim == 2), None)
        rgb = next((f for f, a in decoded if a.ndim == 3), None)
        if gray is not None and rgb is not None:
            raise DataError(
                f"mixed grayscale and RGB images (e.g. {gray} is grayscale, {rgb} is RGB); "
                "set data.channels: 1 or 3 in params.yaml to convert them all"
            )
        channels = 1 if rgb is None else 3

    sizes = {a.shape[:2] for _, a in decoded}
    if cfg.image_size is None and len(sizes) > 1:
        (f1, a1), (f2, a2) = (
            decoded[0],
            next((f, a) for f, a in decoded if a.shape[:2] != decoded[0][1].shape[:2]),
        )
        raise DataError(
            f"images of different sizes ({f1} is {a1.shape[1]}×{a1.shape[0]}, {f2} is "
            f"{a2.shape[1]}×{a2.shape[0]}); set data.image_size: [height, width] in params.yaml to resize "
            "them"
        )
    x = np.stack([_conform(a, channels, cfg.image_size) for _, a in decoded])
    if min(x.shape[2:]) < 4:
        raise DataError(
            f"images are {x.shape[2]}×{x.shape[3]} pixels; at least 4×4 is needed (set data.image_size)"
        )
    return x


def _conform(a: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """A decoded (H, W) or (H, W, 3) image as (C, H, W): gray -> RGB by repetition, RGB -> L as
    Pillow converts it, then resized (BILINEAR) to ``size`` = (height, width) unless it has it."""
    from PIL import Image

    if channels == 3 and a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif channels == 1 and a.ndim == 3:
        a = np.asarray(Image.fromarray(a, "RGB").convert("L"), dtype=np.uint8)
    if size is not None and a.shape[:2] != tuple(size):
        height, width = size
        im = Image.fromarray(a, "L" if a.ndim == 2 else "RGB")
        a = np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _palette_is_gray(img: Image) -> bool:
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


# ---- torchvision ----------------------------------------------------------------------------


def load_torchvision_source(name: str, cfg: DataConfig) -> RawDataset:
    import torchvision

    cls = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }[name]
    root = Path(cfg.cache_dir) / "torchvision"
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(
            f"torchvision:{name}: download into {root} failed ({exc.__class__.__name__}: {str(exc)[:200]}). "
            f"Without network access, save the data as .npz (x_train, y_train, x_test, y_test) and set "
            f"data.source: npz:<path>, or as class folders and set data.source: folder:<path>"
        ) from None

    def arrays(ds: torchvision.datasets.VisionDataset) -> tuple[np.ndarray, np.ndarray]:
        data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(data.astype(np.uint8)), np.asarray(ds.targets, dtype=np.int64)

    x, y = arrays(train)
    x_test, y_test = arrays(test)
    return RawDataset(
        x, y, [str(c) for c in train.classes], _hash_arrays(x, y, x_test, y_test), x_test, y_test
    )


# ---- shared checks --------------------------------------------------------------------------


def remap_labels(raw: RawDataset, source: str) -> None:
    """Make the labels 0..K-1 with every class present in the training data.

    Labels 1..10, or a single stray label 999, would otherwise give a head with an empty class
    0 or a 1000-way output. The training labels that occur become 0..K-1 in increasing order,
    each class keeping its name (its ``class_names`` entry, or the original label value), and
    ``raw.label_map`` records original label -> index. Test labels must occur in training.
    """
    present = np.unique(raw.y)

    def name(label: int) -> str:
        return str(label) if raw.classes is None else raw.classes[label]

    if raw.y_test is not None:
        unseen = sorted(set(np.unique(raw.y_test).tolist()) - set(present.tolist()))
        if unseen:
            shown = [name(u) for u in unseen[:10]]
            raise DataError(
                f"{source}: test labels {shown} never occur in the training data; every test class needs "
                "training images"
            )
    if len(present) > MAX_CLASSES:
        raise DataError(
            f"{source}: {len(present)} distinct labels; at most {MAX_CLASSES} classes are supported"
        )
    count = len(present) if raw.classes is None else len(raw.classes)
    if np.array_equal(present, np.arange(count)):  # already 0..K-1, every class present
        raw.classes = [name(int(v)) for v in present]
        return
    raw.classes = [name(int(v)) for v in present]
    raw.label_map = {str(int(v)): i for i, v in enumerate(present)}
    raw.y = np.searchsorted(present, raw.y).astype(np.int64)
    if raw.y_test is not None:
        raw.y_test = np.searchsorted(present, raw.y_test).astype(np.int64)


def check_labels(raw: RawDataset, source: str) -> None:
    classes = raw.classes
    assert classes is not None, "remap_labels names the classes before check_labels"
    present = np.unique(raw.y)
    if len(present) < 2:
        only = classes[int(present[0])] if len(present) else "none"
        raise DataError(
            f"{source}: only one class ({only}) in the training data; a classifier needs at least 2 classes"
        )
    counts = np.bincount(raw.y, minlength=len(classes))
    thin = [classes[i] for i, c in enumerate(counts) if 0 < c < 3]
    if thin:
        raise DataError(
            f"{source}: classes {thin[:10]} have fewer than 3 training images; stratified train/val/test "
            "splits need at least 3 per class"
        )
    if raw.y_test is not None:
        unseen = sorted(set(np.unique(raw.y_test).tolist()) - set(present.tolist()))
        if unseen:
            raise DataError(
                f"{source}: test labels {unseen[:10]} never occur in the training data; every test class "
                "needs training images"
            )


def _hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
        h.update(buf.getvalue())
    return h.hexdigest()


LOADERS: dict[str, Callable[[str, DataConfig], RawDataset]] = {
    "digits": load_digits_source,
    "npz": load_npz_source,
    "npy": load_npy_source,
    "folder": load_folder_source,
    "torchvision": load_torchvision_source,
}
