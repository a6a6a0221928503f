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


def _read(directory: str | Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC, directory / WEIGHTS
    if not spec_path.is_file() or not weights_path.is_file():
        raise ModelError(
            f"{directory}: no saved {what} ({SPEC} + {WEIGHTS}); run the stage that trains it first"
        )
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{spec_path}: not valid JSON ({exc}); re-run the stage that writes it") from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise ModelError(
            f"{weights_path}: cannot be loaded as a state_dict ({exc.__class__.__name__}: {exc})"
        ) from None
    return spec, state


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(
            f"{where}: weights do not match the spec ({exc}); re-run the stage that writes it"
        ) from None


def save_autoencoder(directory: str | Path, model: AutoEncoder) -> None:
    save_module(directory, model, {"kind": "autoencoder", **model.spec.to_json()})


def load_autoencoder(directory: str | Path, device: str | torch.device = "cpu") -> AutoEncoder:
    spec_json, state = _read(directory, "autoencoder")
    if spec_json.get("name") not in REGISTRY:
        raise ModelError(
            f"{Path(directory) / SPEC}: unknown variant {spec_json.get('name')!r}; known: {', '.join(sorted(REGISTRY))}"
        )
    try:
        spec = ModelSpec.from_json(spec_json)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{Path(directory) / SPEC}: incomplete spec ({exc})") from None
    model = build_autoencoder(spec)
    _load_state(model, state, Path(directory))
    return model.to(device).eval()


def head_spec(head: str, in_dim: int, n_classes: int, **info: Any) -> dict[str, Any]:
    return {"kind": "classifier", "head": head, "in_dim": in_dim, "n_classes": n_classes, **info}


def load_head(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    spec, state = _read(directory, "classifier")
    if spec.get("head") not in HEADS:
        raise ModelError(
            f"{Path(directory) / SPEC}: unknown head {spec.get('head')!r}; known: {', '.join(sorted(HEADS))}"
        )
    module = HEADS[spec["head"]].module(
        int(spec["in_dim"]), int(spec["n_classes"]), **spec.get("options", {})
    )
    _load_state(module, state, Path(directory))
    return module.to(device).eval(), spec


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
            f"{classifier_dir}: the head was fine-tuned with its encoder, but {finetuned} is missing; re-run `aepipe train`"
        )
    autoencoder = load_autoencoder(finetuned if spec.get("finetuned_encoder") else model_dir, device)
    return EncoderClassifier(autoencoder, head).eval(), spec
