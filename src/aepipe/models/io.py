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

WEIGHTS = "weights.pt"
SPEC = "spec.json"


def save_module(directory: str | Path, module: nn.Module, spec: dict[str, Any]) -> None:
    with atomic_dir(directory) as tmp:
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(state, tmp / WEIGHTS)
        (tmp / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def _read(directory: str | Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC, directory / WEIGHTS
    if not spec_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{directory}: no saved {what} ({SPEC} + {WEIGHTS}); run the stage that trains it first")
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{spec_path}: not valid JSON ({exc}); re-run the stage that writes it") from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise ModelError(f"{weights_path}: cannot be loaded as a state_dict ({exc.__class__.__name__}: {exc})") from None
    return spec, state


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{where}: weights do not match the spec ({exc}); re-run the stage that writes it") from None


def save_autoencoder(directory: str | Path, model: AutoEncoder) -> None:
    save_module(directory, model, {"kind": "autoencoder", **model.spec.to_json()})


def load_autoencoder(directory: str | Path, device: str | torch.device = "cpu") -> AutoEncoder:
    spec_json, state = _read(directory, "autoencoder")
    if spec_json.get("name") not in REGISTRY:
        raise ModelError(f"{Path(directory) / SPEC}: unknown variant {spec_json.get('name')!r}; known: {', '.join(sorted(REGISTRY))}")
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
        raise ModelError(f"{Path(directory) / SPEC}: unknown head {spec.get('head')!r}; known: {', '.join(sorted(HEADS))}")
    module = HEADS[spec["head"]].module(int(spec["in_dim"]), int(spec["n_classes"]), **spec.get("options", {}))
    _load_state(module, state, Path(directory))
    return module.to(device).eval(), spec
