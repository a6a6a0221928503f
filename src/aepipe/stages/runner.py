"""Run one stage inside its nested MLflow run: the single entry the CLI and KFP components share.

Path keyword arguments are exactly those of the stage's ``run`` function, so a wrapper only maps
its own notion of paths (CLI flags, KFP artifact paths) onto them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from aepipe.config import Params
from aepipe.errors import AepipeError
from aepipe.stages import STAGES

# Metrics a stage's result may hold that also go on the execution's parent run, so the experiment
# table (one row per execution) can be sorted and compared by them.
PARENT_METRICS = (
    "test_accuracy",
    "test_macro_f1",
    "val_accuracy",
    "val_macro_f1",
    "val_loss",
    "test_recon_mse",
    "final_train_loss",
    "final_val_loss",
)


# Keys of a stage's result that also tag the execution's parent run (the data it ran on).
PARENT_TAGS = {"data_hash": "aepipe.data_hash"}


def _data_hash(data_dir: str | Path | None) -> str | None:
    """For the MLflow tag only: an unreadable meta.json is the stage's to report, clearly."""
    meta = Path(data_dir) / "meta.json" if data_dir else None
    try:
        data = json.loads(meta.read_text()) if meta and meta.is_file() else None
    except (OSError, ValueError):
        return None
    return data.get("data_hash") if isinstance(data, dict) else None


def run_stage(stage: str, params: Params, **paths: str | Path) -> dict[str, Any]:
    """Every stage the same way: ``module.run(params, **paths, tracker=...)`` inside its nested
    MLflow run; result numbers in PARENT_METRICS and keys in PARENT_TAGS go on the parent run too,
    and the last stage of STAGES closes the execution. Under torchrun only a stage module that
    declares ``DATA_PARALLEL = True`` (pretrain) runs, and only rank 0 talks to MLflow (the other
    ranks train their slices and write nothing)."""
    from aepipe.tracking.lineage import finish_parent, stage_run
    from aepipe.training.distributed import DistEnv

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    module = importlib.import_module(f"aepipe.stages.{stage}")
    dist = DistEnv.from_env()
    if dist.enabled and not getattr(module, "DATA_PARALLEL", False):
        raise AepipeError(
            f"`aepipe {stage}` does not run under torchrun (WORLD_SIZE={dist.world}); "
            "only pretrain is data-parallel"
        )
    result: dict[str, Any]
    if not dist.is_main:
        result = module.run(params, **paths)
        return result
    with stage_run(stage, params, _data_hash(paths.get("data_dir"))) as tracker:
        result = module.run(params, **paths, tracker=tracker)
        parent = type(tracker)(tracker.client, tracker.parent_run_id)
        tags = {tag: str(result[key]) for key, tag in PARENT_TAGS.items() if key in result}
        if tags:
            parent.set_tags(tags)
        key_metrics = {
            k: float(v)
            for k, v in result.items()
            if k in PARENT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if key_metrics:
            parent.log_metrics(key_metrics)
    if stage == STAGES[-1]:
        finish_parent(tracker)
    return result
