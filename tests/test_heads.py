"""Classifier heads on a tiny digits run: what each trains, what it saves, what evaluate and the
registered model then load."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aepipe.config import parse_params
from aepipe.data.prepared import load_prepared
from aepipe.errors import ModelError
from aepipe.models.io import FINETUNED, load_autoencoder, load_head, load_pair
from aepipe.models.pair import EncoderClassifier
from aepipe.stages import evaluate, extract, prepare, pretrain, train

TINY = {
    "pretrain": {"epochs": 2},
    "model": {"width": 8, "latent_dim": 16},
    "classifier": {"mlp": {"max_epochs": 4, "patience": 2}, "finetune": {"max_epochs": 3, "patience": 2}},
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("heads")
    params = parse_params(TINY)
    prepare.run(params, root / "data")
    pretrain.run(params, root / "data", root / "ae", root / "pretrain.json", root / "plots")
    extract.run(params, root / "data", root / "ae", root / "features")
    return root


def train_head(root: Path, out: Path, head: str, **classifier: object) -> dict:
    params = parse_params({**TINY, "classifier": {**TINY["classifier"], "head": head, **classifier}})
    result = train.run(
        params, root / "data", root / "features", root / "ae", out / "clf", out / "train.json", out / "plots"
    )
    metrics = evaluate.run(params, root / "data", root / "ae", out / "clf", out / "eval.json", out / "plots")
    return {"train": result, "eval": metrics, "params": params}


def state(directory: Path) -> dict[str, torch.Tensor]:
    return load_autoencoder(directory).state_dict()


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_frozen_heads_leave_the_encoder_alone(pretrained: Path, tmp_path: Path, head: str) -> None:
    before = state(pretrained / "ae")
    run = train_head(pretrained, tmp_path, head)
    assert not (tmp_path / "clf" / FINETUNED).exists()
    _, spec = load_head(tmp_path / "clf")
    assert spec["head"] == head and spec["finetuned_encoder"] is False
    pair, _ = load_pair(pretrained / "ae", tmp_path / "clf")
    for key, value in pair.autoencoder.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert run["eval"]["test_accuracy"] > 0.6  # chance is 0.10


def test_mlp_stops_early_on_validation_and_writes_the_curve_dvc_plots(
    pretrained: Path, tmp_path: Path
) -> None:
    run = train_head(pretrained, tmp_path, "mlp")
    with open(tmp_path / "plots" / "train_curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"step", "train_accuracy", "val_accuracy"} <= set(rows[0])
    assert 1 <= len(rows) <= 4
    best = max(float(r["val_accuracy"]) for r in rows)
    assert run["train"]["val_accuracy"] == pytest.approx(best)
    assert run["train"]["best_epoch"] == 1 + [float(r["val_accuracy"]) for r in rows].index(best)
    _, spec = load_head(tmp_path / "clf")
    assert spec["options"] == {"hidden": [256], "dropout": 0.2}


def test_finetune_updates_the_encoder_and_saves_it_beside_the_head(pretrained: Path, tmp_path: Path) -> None:
    before = state(pretrained / "ae")
    run = train_head(pretrained, tmp_path, "finetune")
    assert state(pretrained / "ae").keys() == before.keys()
    for key, value in state(pretrained / "ae").items():  # the pretrained autoencoder is untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    tuned = state(tmp_path / "clf" / FINETUNED)
    encoder_keys = [k for k in before if k.startswith("encoder.") and before[k].is_floating_point()]
    changed = [k for k in encoder_keys if not torch.equal(tuned[k], before[k])]
    assert len(changed) == len(encoder_keys), sorted(set(encoder_keys) - set(changed))
    decoder_keys = [k for k in before if k.startswith("decoder.")]
    assert all(
        torch.equal(tuned[k], before[k]) for k in decoder_keys
    )  # the decoder is not part of the classifier
    with open(tmp_path / "plots" / "train_curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["encoder_trained"]) for r in rows][:2] == [0, 1]  # head_epochs: 1, then unfrozen
    assert run["eval"]["test_accuracy"] > 0.6


def test_finetuned_pair_is_what_evaluate_and_the_registered_model_score(
    pretrained: Path, tmp_path: Path
) -> None:
    run = train_head(pretrained, tmp_path, "finetune", finetune={"max_epochs": 2, "augment": True})
    x_test, y_test = load_prepared(pretrained / "data").split("test")

    from aepipe.tracking.pyfunc_model import EncoderClassifierModel

    model = EncoderClassifierModel()
    model.load_context(
        SimpleNamespace(
            artifacts={"autoencoder": str(pretrained / "ae"), "classifier": str(tmp_path / "clf")}
        )
    )
    served = model.predict(None, x_test)["class_index"].to_numpy()
    assert float((served == y_test).mean()) == run["eval"]["test_accuracy"]

    # and it is the fine-tuned encoder that makes those predictions, not the pretrained one
    head, _ = load_head(tmp_path / "clf")
    with_pretrained = EncoderClassifier(load_autoencoder(pretrained / "ae"), head)
    assert not np.array_equal(with_pretrained.predict_proba(x_test), model.pair.predict_proba(x_test))


@pytest.mark.slow
def test_registered_finetuned_model_reproduces_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI and a real MLflow store: models:/NAME@challenger scores what evaluate scored."""
    import json

    import mlflow
    import yaml

    from aepipe.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    params = {
        **TINY,
        "classifier": {**TINY["classifier"], "head": "finetune"},
        "mlflow": {"model_name": "ft-digits"},
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("prepare", "pretrain", "extract", "train", "evaluate", "register"):
        assert main([stage]) == 0, stage
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/ft-digits@challenger")
        x, y = load_prepared("data/prepared").split("test")
        acc = float((model.predict(np.ascontiguousarray(x))["class_index"].to_numpy() == y).mean())
    finally:
        mlflow.set_tracking_uri(None)
    assert acc == json.loads(Path("metrics/eval.json").read_text())["test_accuracy"]


def test_a_finetuned_head_without_its_encoder_is_refused(pretrained: Path, tmp_path: Path) -> None:
    train_head(pretrained, tmp_path, "finetune", finetune={"max_epochs": 1})
    import shutil

    shutil.rmtree(tmp_path / "clf" / FINETUNED)
    with pytest.raises(ModelError, match="re-run `aepipe train`"):
        load_pair(pretrained / "ae", tmp_path / "clf")


@pytest.mark.parametrize("head", ["linear", "mlp", "finetune"])
def test_every_head_trains_on_the_labelled_subset_only(pretrained: Path, tmp_path: Path, head: str) -> None:
    run = train_head(pretrained, tmp_path, head, labels_per_class=3)
    assert run["train"]["labels_used"] == 30 and run["train"]["class_counts"] == [3] * 10
    assert run["eval"]["test_accuracy"] > 0.3
