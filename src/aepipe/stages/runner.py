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


def _data_hash(data_dir: str | Path | None) -> str | None:
    """For the MLflow tag only: an unreadable meta.json is the stage's to report, clearly."""
    meta = Path(data_dir) / "meta.json" if data_dir else None
    try:
        data = json.loads(meta.read_text()) if meta and meta.is_file() else None
    except (OSError, ValueError):
        return None
    return data.get("data_hash") if isinstance(data, dict) else None


def run_stage(stage: str, params: Params, **paths: str | Path) -> dict[str, Any]:
    """Under torchrun only ``pretrain`` runs, and only rank 0 talks to MLflow (the other ranks
    train their slices and write nothing)."""
    from aepipe.tracking.lineage import finish_parent, stage_run
    from aepipe.training.distributed import DistEnv

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    module = importlib.import_module(f"aepipe.stages.{stage}")
    dist = DistEnv.from_env()
    if dist.enabled and stage != "pretrain":
        raise AepipeError(
            f"`aepipe {stage}` does not run under torchrun (WORLD_SIZE={dist.world}); "
            "only pretrain is data-parallel"
        )
    result: dict[str, Any]
    if not dist.is_main:
        result = module.run(params, **paths)
        return result
    with stage_run(stage, params, _data_hash(paths.get("data_dir"))) as tracker:
        if stage == "register":
            result = module.run(params, **paths, run_id=tracker.run_id)
        else:
            result = module.run(params, **paths, tracker=tracker)
        if stage == "prepare":
            tracker.client.set_tag(tracker.parent_run_id, "aepipe.data_hash", result["data_hash"])
        key_metrics = {
            k: float(v)
            for k, v in result.items()
            if k in PARENT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if key_metrics:
            parent = type(tracker)(tracker.client, tracker.parent_run_id)
            parent.log_metrics(key_metrics)
    if stage == "register":
        finish_parent(tracker)
    return result
