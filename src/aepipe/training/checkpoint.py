"""Per-epoch training checkpoints that survive a kill, outside DVC's outputs.

DVC deletes a stage's outputs before running it, so checkpoints live in
``.aepipe/checkpoints/<stage>-<key>`` (``AEPIPE_CHECKPOINT_DIR`` moves the root, e.g. onto a
volume shared by the pods of a PyTorchJob; where the working directory is read-only, as in the
component image, the root is under ``$XDG_CACHE_HOME``). The key hashes everything that
determines the run (params, data hash, input model, world size), so a re-run with the same
inputs resumes and any change starts afresh. A checkpoint is written to a temporary file and
renamed, so a kill mid-write leaves the previous one intact; the stage deletes the directory once
its outputs are written. Everything in it is a tensor or a plain number/string/list/dict, so it loads with
``torch.load(..., weights_only=True)``: RNG states are stored as tensors, never pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aepipe.errors import ModelError
from aepipe.io import atomic_path

ROOT_ENV = "AEPIPE_CHECKPOINT_DIR"
DEFAULT_ROOT = ".aepipe/checkpoints"
FILE = "last.pt"


def checkpoint_root() -> Path:
    """``AEPIPE_CHECKPOINT_DIR``, else ``.aepipe/checkpoints`` in the working directory when it is
    writable (a checkout), else ``$XDG_CACHE_HOME/aepipe/checkpoints`` (``~/.cache`` by default):
    in a container the working directory is the image's, read-only for the non-root user."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    if os.access(Path.cwd(), os.W_OK):
        return Path(DEFAULT_ROOT)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "aepipe" / "checkpoints"


def checkpoint_dir(stage: str, *key_parts: Any) -> Path:
    """``<root>/<stage>-<16 hex digits of the key>``; the root from :func:`checkpoint_root`."""
    text = json.dumps(key_parts, sort_keys=True, default=str)
    return checkpoint_root() / f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG a training loop may draw from, as tensors and plain numbers."""
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple), "the global RandomState is always MT19937 (a legacy tuple)"
    kind, keys, pos, has_gauss, gauss = legacy
    version, state, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": version,
            "state": torch.tensor(state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if generator is not None:
        out["batch_order"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if generator is not None and "batch_order" in state:
        generator.set_state(state["batch_order"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Save/load/clear the last checkpoint of one run; only the writer process calls ``save``."""

    def __init__(self, directory: str | os.PathLike[str], enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.enabled = enabled
        self.resumed_from = 0  # epochs the loaded checkpoint held (set by the loop that resumes)

    def load(self) -> dict[str, Any] | None:
        if not self.enabled or not self.path.is_file():
            return None
        try:
            state: dict[str, Any] = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt files
            raise ModelError(
                f"{self.path}: checkpoint cannot be loaded ({exc.__class__.__name__}: {exc}); delete it to "
                "start afresh"
            ) from None
        return state

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        """Around loading a checkpoint's states into the run: a mismatch (the code changed since
        it was written) becomes a clear error instead of a traceback."""
        try:
            yield
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise ModelError(
                f"{self.path}: checkpoint does not fit this run ({exc.__class__.__name__}: "
                f"{str(exc)[:300]}); was it written by other code? delete {self.directory} to start afresh"
            ) from None

    def save(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with atomic_path(self.path, ".pt") as tmp:
            torch.save(state, tmp)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
