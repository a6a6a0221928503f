"""``aepipe predict``: classify image files, .npy or .npz arrays with an aepipe pair model.

Only what the project itself logs is loaded, and nothing from the model is executed: the model
(from the registry, a run, or a local directory) must be the models-from-code pyfunc ``register``
logs — an ``MLmodel`` with the single ``python_function`` flavor, loader ``mlflow.pyfunc.loaders.code_model``
with aepipe's code file (never a pickled ``python_model``) and exactly the ``autoencoder`` and ``classifier``
artifacts, which hold nothing but ``spec.json`` + ``weights.pt`` state dicts. The installed aepipe
rebuilds the pair from those (``torch.load(weights_only=True)``); the code files bundled in the
model directory are never imported. Anything else is refused before any of it is read as code.
"""

from __future__ import annotations

import errno
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

import numpy as np

from aepipe.errors import DataError, ModelError, TrackingError

if TYPE_CHECKING:
    from aepipe.data.sources import Alpha

REMOTE = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "http://", "https://")
WEIGHT_FILES = {"spec.json", "weights.pt"}
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
CODE_FILES = {"pyfunc_model.py", "pyfunc_encoder.py"}  # aepipe.tracking's models-from-code entries
REFUSED = "refused before anything in it was loaded"


def remote_uri(uri: str) -> bool:
    return uri.startswith(REMOTE)


def _checked_path(p: Path, what: str) -> Path:
    """``p`` resolved, or one clear error for a missing path or a symlink loop."""
    try:
        return p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise DataError(f"{p}: symlink loop; point {what} at a real file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{p}: symlink loop; point {what} at a real file") from None
        raise DataError(f"{p}: not found; check the path of {what}") from None


def _fetch(uri: str, dest: str) -> Path:
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dest))
    except Exception as exc:
        raise TrackingError(
            f"cannot download model {uri!r}: {_first_line(exc)}; "
            "check the name, version or alias with `aepipe status`"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


def _inside(root: Path, rel: str, uri: str) -> Path:
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ModelError(f"{uri}: artifact path {rel!r} points outside the model directory; {REFUSED}")
    return path


def check_pair_model(model_dir: Path, uri: str) -> tuple[Path, Path]:
    """(autoencoder dir, classifier dir) of an aepipe pair model directory, or a clear refusal."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ModelError(
            f"{uri}: not an MLflow model directory (no MLmodel file); pass models:/NAME@ALIAS, "
            "runs:/RUN/model or a directory that `register` logged (e.g. from `mlflow artifacts download -u "
            "models:/NAME/N`)"
        )
    try:
        spec = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"{mlmodel}: not valid YAML ({exc.__class__.__name__}); {REFUSED}") from None
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    if not isinstance(flavors, dict) or set(flavors) != {"python_function"}:
        found = sorted(flavors) if isinstance(flavors, dict) else "none"
        raise ModelError(
            f"{mlmodel}: flavors {found}, but an aepipe model has only python_function; "
            f"aepipe predict loads only the pair model that `register` logs; {REFUSED}"
        )
    pf = flavors["python_function"]
    if not isinstance(pf, dict):
        raise ModelError(f"{mlmodel}: python_function flavor is not a mapping; {REFUSED}")
    if pf.get("python_model") or pf.get("loader_module") == "mlflow.pyfunc.model":
        raise ModelError(
            f"{mlmodel}: a pickled python_model ({pf.get('python_model')!r}), not aepipe's models-from-code "
            f"pyfunc; aepipe never unpickles a model; {REFUSED}"
        )
    code_file = Path(str(pf.get("model_code_path") or "")).name
    if pf.get("loader_module") != CODE_LOADER or code_file not in CODE_FILES:
        raise ModelError(
            f"{mlmodel}: loader {pf.get('loader_module')!r} with code {code_file or 'none'!r}; an aepipe "
            f"model is the models-from-code pyfunc ({CODE_LOADER}, {' or '.join(sorted(CODE_FILES))}); "
            f"{REFUSED}"
        )
    artifacts = pf.get("artifacts") or {}
    if set(artifacts) == {"autoencoder"}:
        raise ModelError(
            f"{uri}: this is the encoder-only model (<name>-encoder: images -> features), which has no "
            "classifier; predict with the pair, e.g. models:/aepipe-digits@champion"
        )
    if set(artifacts) != {"autoencoder", "classifier"}:
        raise ModelError(
            f"{mlmodel}: artifacts {sorted(artifacts)}; an aepipe pair model has exactly autoencoder and "
            f"classifier; {REFUSED}"
        )
    root = model_dir.resolve()
    dirs = []
    for key in ("autoencoder", "classifier"):
        entry = artifacts[key]
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str):
            raise ModelError(f"{mlmodel}: artifact {key} has no path; {REFUSED}")
        d = _inside(root, rel, uri)
        if not d.is_dir():
            raise ModelError(f"{uri}: artifact {key} ({rel}) is missing; {REFUSED}")
        for f in d.rglob("*"):
            if f.is_symlink() or (f.is_file() and f.name not in WEIGHT_FILES):
                raise ModelError(
                    f"{f}: an aepipe model artifact holds only spec.json and weights.pt state dicts; "
                    f"{REFUSED}"
                )
        dirs.append(d)
    return dirs[0], dirs[1]


def load_pair_model(uri: str, workdir: str) -> tuple[Any, list[str], str | None]:
    """(EncoderClassifier, class names, the training run's ``data.alpha`` or None where the model
    predates its record) from a registry/run URI or a local model directory."""
    from aepipe.models.io import load_pair

    if remote_uri(uri):
        model_dir = _fetch(uri, workdir)
    else:
        model_dir = _checked_path(Path(uri), "--model")
        if not model_dir.is_dir():
            raise ModelError(
                f"{uri}: a file; --model takes a model directory (holding MLmodel) or a models:/ URI"
            )
    ae_dir, clf_dir = check_pair_model(model_dir, uri)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a refused file
            warnings.simplefilter("ignore")
            pair, spec = load_pair(ae_dir, clf_dir, "cpu")
    except ModelError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(
            f"{uri}: {first[:400]} — only plain state dicts are loaded (weights_only); {REFUSED}"
        ) from None
    classes = spec.get("classes")
    if not isinstance(classes, list) or len(classes) != int(spec.get("n_classes", -1)):
        raise ModelError(f"{clf_dir / 'spec.json'}: no class names for its {spec.get('n_classes')} classes")
    from aepipe.data.sources import Alpha

    recorded, known = spec.get("data_alpha"), get_args(Alpha)
    if recorded is not None and recorded not in known:
        raise ModelError(
            f"{clf_dir / 'spec.json'}: data_alpha is {recorded!r}; it must be one of {', '.join(known)} "
            "(the data.alpha the model was trained with)"
        )
    return pair, [str(c) for c in classes], recorded


def resolve_alpha(given: Alpha | None, recorded: str | None, uri: str) -> Alpha:
    """The background image files with transparency are read over: ``--alpha`` when given, else
    the training run's ``data.alpha`` recorded in the model (white for a model that predates the
    record). A model trained over white or black reads transparent files only over that same
    background, since any other gives it pixels it never saw (``refuse`` gives none, so it is always
    taken); one trained with ``refuse`` saw no transparent image, so ``--alpha white|black``
    chooses freely."""
    if given is None:
        return cast("Alpha", recorded) if recorded is not None else "white"
    if recorded in ("white", "black") and given != recorded and given != "refuse":
        raise DataError(
            f"--alpha {given}: {uri} was trained on images composited over {recorded} "
            f"(data.alpha: {recorded}), so transparent files read over {given} would give it pixels it "
            f"never saw; drop --alpha or pass --alpha {recorded}"
        )
    return given


def check_inputs(paths: list[str]) -> None:
    """Each input is an existing regular file (checked before the model is fetched or loaded)."""
    if not paths:
        raise DataError("no images given")
    for p in map(Path, paths):
        real = _checked_path(p, "the input")
        if real.is_dir():
            raise DataError(f"{p}: a directory; pass image files, .npy or .npz (e.g. {p}/*.png)")
        if not real.is_file():
            raise DataError(f"{p}: not a regular file; pass image files, .npy or .npz")
        if p.suffix.lower() == ".npy":  # the header alone says whether it is a pickled object array
            _array_images(p, lambda arr, path, key: arr, mmap=True)


def load_images(
    paths: list[str], shape: tuple[int, int, int], alpha: Alpha = "white"
) -> tuple[list[str], np.ndarray]:
    """Image files, .npy or .npz arrays as uint8 (N, C, H, W) for a model of input ``shape``.

    Image files are read as ``prepare`` reads a folder source (:func:`aepipe.data.sources.load_image`:
    16-bit and float images scaled, transparency composited over ``alpha``, which must be the
    training's ``data.alpha``), then converted to the model's channels and resized to its H×W.
    """
    from aepipe.data.sources import _images_from_array, load_image

    c, h, w = shape
    names: list[str] = []
    arrays: list[np.ndarray] = []
    check_inputs(paths)
    for p in map(Path, paths):
        if p.suffix.lower() in (".npz", ".npy"):
            x = _array_images(p, _images_from_array)
            if x.shape[1:] != shape:
                raise DataError(f"{p}: images are {x.shape[1:]} but the model expects {shape} (C, H, W)")
            names += [f"{p.name}[{i}]" for i in range(len(x))]
            arrays.append(x)
            continue
        names.append(p.name)
        arrays.append(load_image(p, c, (h, w), alpha, for_predict=True)[None])
    if not arrays:
        raise DataError("no images given")
    return names, np.ascontiguousarray(np.concatenate(arrays))


def _array_images(
    p: Path, convert: Callable[[np.ndarray, Path, str], np.ndarray], mmap: bool = False
) -> np.ndarray:
    """Images from .npy (the array) or .npz (key x, x_test or images); never unpickled."""
    try:
        if p.suffix.lower() == ".npy":
            return convert(np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None), p, "array")
        with np.load(p, allow_pickle=False) as npz:
            key = next((k for k in ("x", "x_test", "images") if k in npz.files), None)
            if key is None:
                raise DataError(f"{p}: no x / x_test / images array; found {sorted(npz.files)}")
            return convert(npz[key], p, key)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(
                f"{p}: holds pickled (object) arrays, which are refused; save plain uint8 arrays"
            ) from None
        raise DataError(f"{p}: not a readable {p.suffix} of images ({exc})") from None
    except OSError as exc:
        raise DataError(f"{p}: not a readable {p.suffix} of images ({exc})") from None


def predict(model_uri: str, paths: list[str], alpha: Alpha | None = None) -> list[dict[str, Any]]:
    """``alpha``: the background of image files with transparency (``--alpha``); None takes the
    training run's ``data.alpha`` from the model (:func:`resolve_alpha`)."""
    check_inputs(paths)
    with tempfile.TemporaryDirectory(prefix="aepipe-predict-") as workdir:
        pair, classes, recorded = load_pair_model(model_uri, workdir)
    over = resolve_alpha(alpha, recorded, model_uri)
    names, x = load_images(paths, tuple(pair.autoencoder.spec.input_shape), over)
    proba = pair.predict_proba(x)
    return [
        {
            "input": n,
            "class": classes[int(np.argmax(p))],
            "probability": float(max(p)),
            "probabilities": [round(float(v), 6) for v in p],
        }
        for n, p in zip(names, proba, strict=True)
    ]
