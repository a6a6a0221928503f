"""What each stage writes, from its ``run()`` path arguments, and what happened to it on failure.

The CLI uses this before a stage starts, to sweep the temp files a killed run of it left
(:func:`aepipe.io.sweep_leftovers`), and when the stage fails, to end the error message with the
truth about every output: left as it was, written before the failure, or absent (and, under
``dvc repro``, that DVC removed it first when the stage's outputs do not persist).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aepipe.paths import PLOT_FILES

# run() keywords that name a stage's own outputs (files or directories).
OUTPUT_ARGS: dict[str, tuple[str, ...]] = {
    "prepare": ("out_dir",),
    "pretrain": ("model_dir", "metrics_path"),
    "extract": ("features_dir",),
    "train": ("classifier_dir", "metrics_path"),
    "evaluate": ("metrics_path",),
    "register": ("out_path",),
}


def stage_outputs(stage: str, paths: Mapping[str, Any]) -> list[Path]:
    outs = [Path(paths[k]) for k in OUTPUT_ARGS[stage] if paths.get(k)]
    if paths.get("plots_dir") and stage in PLOT_FILES:
        outs += [Path(paths["plots_dir"]) / name for name in PLOT_FILES[stage]]
    return outs


Fingerprint = tuple[Any, ...] | None


def fingerprint(path: Path) -> Fingerprint:
    """Inode, size and mtime of a file, or of a directory and everything in it (None: absent).
    An atomic replace gives a new inode, so any rewrite shows, even with equal bytes."""
    try:
        st = path.stat()
    except OSError:
        return None
    own = (st.st_ino, st.st_size, st.st_mtime_ns)
    if not path.is_dir():
        return own
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            try:
                s = p.stat()
            except OSError:
                continue
            entries.append((str(p.relative_to(path)), s.st_ino, s.st_size, s.st_mtime_ns))
    return (own, tuple(entries))


def snapshot(outs: list[Path]) -> dict[Path, Fingerprint]:
    return {p: fingerprint(p) for p in outs}


def describe(stage: str, before: dict[Path, Fingerprint]) -> str:
    """One sentence on what the failed run did to each output."""
    changed: list[str] = []
    kept: list[str] = []
    absent: list[str] = []
    for path, was in before.items():
        now = fingerprint(path)
        (changed if now != was else kept if was is not None else absent).append(str(path))
    parts = []
    if changed:
        parts.append(
            f"written before the failure: {', '.join(changed)} (dvc.lock was not updated, so `dvc repro` "
            f"re-runs {stage}; or run `aepipe {stage}` again)"
        )
    if kept:
        parts.append(f"left as they were: {', '.join(kept)}")
    if absent:
        if os.environ.get("DVC_STAGE"):
            parts.append(
                f"not there when the stage started: {', '.join(absent)} (a first run, or dvc repro "
                f"deleted them because they are not `persist: true` in dvc.yaml: then `dvc checkout "
                f"{stage}` brings back the last committed ones)"
            )
        else:
            parts.append(f"not written: {', '.join(absent)}")
    return "Outputs " + "; ".join(parts) + "." if parts else ""
