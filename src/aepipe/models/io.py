"""Save and load models as state_dict + JSON spec (never pickled objects).

Loading uses ``torch.load(..., weights_only=True)`` so a model file handed in by a user cannot
run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aepipe.errors import ModelError
from aepipe.io import atomic_dir
from aepipe.models import REGISTRY, AutoEncoder, ModelSpec, build_autoencoder
from aepipe.models.heads import HEADS
from aepipe.models.pair import EncoderClassifier

WEIGHTS = "weights.pt"
SPEC = "spec.json"
FINETUNED = "autoencoder"  # subdirectory of a classifier dir holding a fine-tuned autoencoder


def _write(directory: Path, module: nn.Module, spec: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save(state, directory / WEIGHTS)
    (directory / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def save_module(directory: str | Path, module: nn.Module, spec: dict[str, Any]) -> None:
    with atomic_dir(directory) as tmp:
        _write(tmp, module, spec)


def save_classifier(
    directory: str | Path, head: nn.Module, spec: dict[str, Any], autoencoder: AutoEncoder | None = None
) -> None:
    """The head, plus the autoencoder it was trained with when training changed it (finetune).

    Written as one directory swap, so a classifier dir never pairs a fine-tuned head with a
    missing or stale encoder.
    """
    with atomic_dir(directory) as tmp:
        _write(tmp, head, {**spec, "finetuned_encoder": autoencoder is not None})
        if autoencoder is not None:
            _write(tmp / FINETUNED, autoencoder, {"kind": "autoencoder", **autoencoder.spec.to_json()})


def _restore_hint(directory: Path) -> str:
    return (
        f"restore it (`dvc checkout`, or `git checkout -- {directory}` if it is committed) "
        "or re-run the stage that writes it"
    )


def _read(directory: str | Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC, directory / WEIGHTS
    if not spec_path.is_file() or not weights_path.is_file():
        raise ModelError(
            f"{directory}: no saved {what} ({SPEC} + {WEIGHTS}); run the stage that trains it first"
        )
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{spec_path}: not valid JSON ({exc}); {_restore_hint(directory)}") from None
    if not isinstance(spec, dict):
        raise ModelError(
            f"{spec_path}: must hold a JSON object of the model's settings, not a {type(spec).__name__}; "
            f"{_restore_hint(directory)}"
        )
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        import pickle

        first = (
            "torch.load(weights_only=True) refused it: a corrupt file, or one holding pickled objects"
            if isinstance(exc, pickle.UnpicklingError)
            else " ".join(str(exc).split("\n")[0].split())[:160]
        )
        raise ModelError(
            f"{weights_path}: cannot be loaded as a state_dict of tensors "
            f"({exc.__class__.__name__}: {first}); {_restore_hint(directory)}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{weights_path}: is not a state_dict of tensors; {_restore_hint(directory)}")
    return spec, state


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Weights that do not fit the module built from spec.json: the spec was edited, or the two
    files come from different runs. One line naming the first mismatch, not torch's list."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or shapes):
        module.load_state_dict(state)
        return
    if shapes:
        k = shapes[0]
        first = f"{k} is {list(state[k].shape)} in {WEIGHTS} but {list(own[k].shape)} for {SPEC}"
    else:
        first = f"{WEIGHTS} lacks {missing[0]}" if missing else f"{WEIGHTS} has an unknown {unexpected[0]}"
    count = len(missing) + len(unexpected) + len(shapes)
    raise ModelError(
        f"{where}: {WEIGHTS} does not match the model {SPEC} describes "
        f"({count} mismatched tensors, e.g. {first}); was {SPEC} edited? {_restore_hint(where)}"
    )


def _spec_error(path: Path, exc: Exception) -> ModelError:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        detail = f"options.{key}: {err['msg']} (got {err.get('input')!r})"
    elif isinstance(exc, KeyError):
        detail = f"missing key {exc.args[0]!r}"
    else:
        detail = " ".join(str(exc).split())[:200]
    return ModelError(f"{path}: invalid model settings: {detail}; {_restore_hint(path.parent)}")


def _check_autoencoder_spec(path: Path, spec: dict[str, Any]) -> None:
    def positive_int(key: str) -> None:
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer (got {value!r})")

    for key in ("latent_dim", "width", "depth"):
        positive_int(key)
    shape = spec.get("input_shape")
    if not (
        isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v >= 1 for v in shape)
    ):
        raise ValueError(f"input_shape must be [channels, height, width] (got {shape!r})")
    for key in ("mean", "std"):
        value = spec.get(key)
        if not (isinstance(value, list) and len(value) == shape[0]):
            raise ValueError(f"{key} must list one number per channel ({shape[0]}) (got {value!r})")
    if not isinstance(spec.get("options", {}), dict):
        raise ValueError(f"options must be a JSON object (got {spec.get('options')!r})")


def save_autoencoder(directory: str | Path, model: AutoEncoder) -> None:
    save_module(directory, model, {"kind": "autoencoder", **model.spec.to_json()})


def load_autoencoder(directory: str | Path, device: str | torch.device = "cpu") -> AutoEncoder:
    spec_json, state = _read(directory, "autoencoder")
    spec_path = Path(directory) / SPEC
    if spec_json.get("kind") == "classifier":
        raise ModelError(
            f"{spec_path}: this is a classifier, not an autoencoder; pass the autoencoder directory "
            "(models/autoencoder, or a classifier's autoencoder/ subdirectory)"
        )
    if spec_json.get("name") not in REGISTRY:
        raise ModelError(
            f"{spec_path}: unknown variant {spec_json.get('name')!r}; known: {', '.join(sorted(REGISTRY))}"
        )
    try:
        _check_autoencoder_spec(spec_path, spec_json)
        spec = ModelSpec.from_json(spec_json)
        model = build_autoencoder(spec)
    except ModelError as exc:
        raise ModelError(f"{spec_path}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # pydantic's errors are ValueErrors
        raise _spec_error(spec_path, exc) from None
    _load_state(model, state, Path(directory))
    return model.to(device).eval()


def head_spec(head: str, in_dim: int, n_classes: int, **info: Any) -> dict[str, Any]:
    return {"kind": "classifier", "head": head, "in_dim": in_dim, "n_classes": n_classes, **info}


def load_head(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    spec, state = _read(directory, "classifier")
    spec_path = Path(directory) / SPEC
    if spec.get("head") not in HEADS:
        raise ModelError(f"{spec_path}: unknown head {spec.get('head')!r}; known: {', '.join(sorted(HEADS))}")
    try:
        for key in ("in_dim", "n_classes"):
            value = spec[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer (got {value!r})")
        options = spec.get("options", {})
        if not isinstance(options, dict):
            raise ValueError(f"options must be a JSON object (got {options!r})")
        module = HEADS[spec["head"]].module(spec["in_dim"], spec["n_classes"], **options)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _spec_error(spec_path, exc) from None
    _load_state(module, state, Path(directory))
    return module.to(device).eval(), spec


def feature_dim(autoencoder: AutoEncoder) -> int:
    """Width of ``features`` (what a head reads), from one blank image."""
    c, h, w = autoencoder.spec.input_shape
    param = next(autoencoder.parameters())
    with torch.inference_mode():
        return int(autoencoder.eval().features(torch.zeros(1, c, h, w, device=param.device)).shape[1])


def load_pair(
    model_dir: str | Path, classifier_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[EncoderClassifier, dict[str, Any]]:
    """Encoder + head as trained: the classifier dir's own fine-tuned autoencoder when it holds
    one, else the pretrained autoencoder in ``model_dir``. ``evaluate`` and the registered MLflow
    model both load through here, so they score the same weights."""
    head, spec = load_head(classifier_dir, device)
    finetuned = Path(classifier_dir) / FINETUNED
    if spec.get("finetuned_encoder") and not finetuned.is_dir():
        raise ModelError(
            f"{classifier_dir}: the head was fine-tuned with its encoder, but {finetuned} is missing; re-run "
            "`aepipe train`"
        )
    encoder_dir = finetuned if spec.get("finetuned_encoder") else Path(model_dir)
    autoencoder = load_autoencoder(encoder_dir, device)
    dim = feature_dim(autoencoder)
    if dim != spec["in_dim"]:
        raise ModelError(
            f"{Path(classifier_dir) / SPEC}: the classifier reads {spec['in_dim']} features but the "
            f"autoencoder in {encoder_dir} gives {dim}: they come from different runs; "
            "re-run `aepipe train` (dvc repro) with this autoencoder"
        )
    return EncoderClassifier(autoencoder, head).eval(), spec
