"""A small registry world for the review/promotion tests: one pretrained encoder on digits and
two heads with very different label budgets (1 vs all labels per class), evaluated, ready to be
registered. Kept tiny (conv width 8, 2 epochs) so the fault, replay and browser tests stay fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aepipe.config import Params, parse_params
from aepipe.stages import evaluate, extract, prepare, pretrain, train
from aepipe.stages.runner import run_stage

HEADS = {"few": 1, "all": None}
# Tests that train the semisup head on digits only to have a registered, reviewable few-label pair
# pin a short schedule: 8 epochs of 100 steps instead of params.yaml's 60 (tuned for MNIST quality).
# These tests check what happens to a pair (registration, review, promotion, faults), not how good
# the head gets; what the head's quality rests on is tested in tests/test_semisup.py.
SEMISUP = {"max_epochs": 8, "patience": 4}


def params_for(labels: int | None, experiment: str, model_name: str) -> Params:
    return parse_params(
        {
            "model": {"name": "conv", "width": 8},
            "pretrain": {"epochs": 2},
            "classifier": {"labels_per_class": labels, "semisup": SEMISUP},
            "mlflow": {"experiment": experiment, "model_name": model_name},
        }
    )


def build(root: Path, experiment: str, model_name: str) -> dict[str, Any]:
    base = params_for(None, experiment, model_name)
    prepare.run(base, root / "data")
    pretrain.run(base, root / "data", root / "ae", root / "pretrain.json", root / "plots")
    extract.run(base, root / "data", root / "ae", root / "features")
    heads = {}
    for key, labels in HEADS.items():
        p = params_for(labels, experiment, model_name)
        d = root / key
        (d / "metrics").mkdir(parents=True)
        (d / "plots").mkdir(parents=True)
        (d / "metrics/pretrain.json").write_text((root / "pretrain.json").read_text())
        (d / "plots/pretrain_loss.png").write_bytes((root / "plots/pretrain_loss.png").read_bytes())
        train.run(
            p, root / "data", root / "features", root / "ae", d / "clf", d / "metrics/train.json", d / "plots"
        )
        ev = evaluate.run(p, root / "data", root / "ae", d / "clf", d / "metrics/eval.json", d / "plots")
        heads[key] = {"params": p, "dir": d, "eval": ev}
    return {"root": root, "heads": heads}


def register(world: dict[str, Any], key: str, select: str = "current", params: Params | None = None) -> dict:
    h = world["heads"][key]
    return run_stage(
        "register",
        params or h["params"],
        data_dir=world["root"] / "data",
        model_dir=world["root"] / "ae",
        classifier_dir=h["dir"] / "clf",
        metrics_dir=h["dir"] / "metrics",
        plots_dir=h["dir"] / "plots",
        out_path=h["dir"] / "registration.json",
        select=select,
    )
