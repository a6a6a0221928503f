"""prepare: source -> stratified train/val(/test) splits in the prepared-dataset format.

Only labels are held in memory; images are copied block by block (``write_prepared``), so an
``npy:`` source larger than RAM prepares with flat memory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from aepipe.config import Params
from aepipe.data.prepared import write_prepared
from aepipe.data.sources import load_source
from aepipe.data.splits import stratified_split
from aepipe.tracking.tracker import NullTracker, Tracker


def run(params: Params, out_dir: str | Path, tracker: Tracker = NullTracker()) -> dict[str, Any]:
    cfg = params.data
    raw = load_source(cfg)  # validates everything before a byte is written

    pool = np.arange(len(raw.x))
    if raw.x_test is None:
        pool, test_idx = stratified_split(pool, raw.y, cfg.test_fraction, cfg.seed)
        parts, y = [raw.x], raw.y
    else:
        parts, y = [raw.x, raw.x_test], np.concatenate([raw.y, raw.y_test])
        test_idx = np.arange(len(raw.x), len(y))
    train_idx, val_idx = stratified_split(pool, y[pool], cfg.val_fraction, cfg.seed + 1)

    counts = {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)}
    meta = write_prepared(
        out_dir,
        parts,
        y,
        {"train": train_idx, "val": val_idx, "test": test_idx},
        {
            "source": cfg.source,
            "source_hash": raw.source_hash,
            "classes": raw.classes,
            "shape": list(raw.x.shape[1:]),
            "counts": counts,
            "test_split": "given" if raw.x_test is not None else "carved",
            # how image files with transparency were read; the trained pair records it so that
            # `aepipe predict` reads image files the same way (aepipe.predict.resolve_alpha)
            "alpha": cfg.alpha,
            **({"label_map": raw.label_map} if raw.label_map else {}),
        },
    )
    if raw.label_map:
        shown = ", ".join(f"{k}->{v}" for k, v in list(raw.label_map.items())[:20])
        more = f", ... ({len(raw.label_map)} classes)" if len(raw.label_map) > 20 else ""
        print(
            f"aepipe prepare: labels of {cfg.source} are not 0..K-1 with every class present; "
            f"remapped (original -> class index): {shown}{more}; recorded as label_map in "
            f"{Path(out_dir) / 'meta.json'}",
            file=sys.stderr,
        )
    tracker.log_params({f"data.{k}": v for k, v in cfg.model_dump().items()})
    tracker.log_metrics({f"n_{k}": v for k, v in counts.items()})
    tracker.set_tags({"aepipe.data_hash": meta["data_hash"], "aepipe.source_hash": raw.source_hash})
    return {
        "data_hash": meta["data_hash"],
        "counts": counts,
        "classes": len(meta["classes"]),
        "shape": meta["shape"],
        **({"label_map": raw.label_map} if raw.label_map else {}),
    }
