"""The stage functions end to end on digits, without MLflow (NullTracker)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from aepipe.config import parse_params
from aepipe.models.io import load_head
from aepipe.stages import evaluate, extract, prepare, pretrain, train
from tests.registry_world import SEMISUP

FAST = {"pretrain": {"epochs": 3}, "model": {"width": 16}}


def run_all(params, root: Path) -> dict:
    prepare.run(params, root / "data")
    pretrain.run(params, root / "data", root / "ae", root / "metrics/pretrain.json", root / "plots")
    extract.run(params, root / "data", root / "ae", root / "features")
    train.run(
        params,
        root / "data",
        root / "features",
        root / "ae",
        root / "clf",
        root / "metrics/train.json",
        root / "plots",
    )
    return evaluate.run(
        params, root / "data", root / "ae", root / "clf", root / "metrics/eval.json", root / "plots"
    )


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("stages")
    return root, run_all(parse_params(FAST), root)


def test_pipeline_learns_digits(fast_run: tuple[Path, dict]) -> None:
    root, metrics = fast_run
    assert metrics["test_accuracy"] > 0.85  # chance is 0.10
    assert metrics["n_test"] == 360 and 0 < metrics["test_macro_f1"] <= 1
    assert set(metrics["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert 0 < metrics["test_recon_mse"] < 0.1
    assert json.loads((root / "metrics/eval.json").read_text()) == metrics


def test_outputs_dvc_reads(fast_run: tuple[Path, dict]) -> None:
    root, _ = fast_run
    with open(root / "plots/pretrain_loss.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    with open(root / "plots/confusion.csv") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == 360
    for png in ("confusion.png", "reconstructions.png", "pretrain_loss.png"):
        assert (root / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    feats = {s: np.load(root / "features" / f"{s}.npy") for s in ("train", "val", "test")}
    assert [len(f) for f in feats.values()] == [1293, 144, 360]
    _, spec = load_head(root / "clf")
    assert spec["head"] == "linear" and spec["labels_used"] == 1293 and spec["C"] in (0.01, 0.1, 1.0, 10.0)


def test_same_params_same_metrics_on_cpu(fast_run: tuple[Path, dict], tmp_path: Path) -> None:
    _, first = fast_run
    assert run_all(parse_params(FAST), tmp_path) == first


def test_labels_per_class_uses_a_stratified_subset(fast_run: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = fast_run
    params = parse_params({**FAST, "classifier": {"labels_per_class": 5, "semisup": SEMISUP}})
    result = train.run(
        params, root / "data", root / "features", root / "ae", tmp_path / "clf", tmp_path / "m.json", tmp_path
    )
    assert result["labels_used"] == 50 and result["class_counts"] == [5] * 10
