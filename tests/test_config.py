from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aepipe.cli import main
from aepipe.config import Params, load_params, parse_params
from aepipe.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid_and_complete() -> None:
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # every section of the model is spelled out in params.yaml, so `dvc params diff` shows it all
    assert set(raw) == set(Params.model_fields)
    assert params.data.source == "digits"
    assert params.classifier.head == "auto" and params.classifier.resolved_head == "linear"  # all labels


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"data": {"sourse": "digits"}}, ["data.sourse", "unknown key", "source", "val_fraction"]),
        ({"colour": 1}, ["colour", "unknown key", "pretrain"]),
        ({"pretrain": {"epochs": "ten"}}, ["pretrain.epochs", "integer", "'ten'"]),
        ({"pretrain": {"lr": -0.1}}, ["pretrain.lr", "greater than 0"]),
        ({"pretrain": {"batch_size": 0}}, ["pretrain.batch_size", "greater than or equal to 1"]),
        ({"device": "tpu"}, ["device", "'auto'", "'cpu'", "'cuda'"]),
        ({"data": {"source": "s3:bucket"}}, ["data.source", "digits | npz:<path> | folder:<path>"]),
        ({"data": {"source": "torchvision:imagenet"}}, ["data.source", "mnist, fashion_mnist, cifar10"]),
        ({"data": {"val_fraction": 0.7}}, ["data.val_fraction", "less than 0.5"]),
        ({"model": {"name": "transformer"}}, ["model.name", "transformer", "allowed: conv"]),
        ({"model": {"resnet": {}}}, ["model.resnet", "allowed"]),
        ({"model": {"conv": {"dropout": 0.1}}}, ["model.conv.dropout", "unknown key"]),
        ({"classifier": {"head": "svm"}}, ["classifier.head", "svm", "linear"]),
        (
            {"classifier": {"labels_per_class": -5}},
            ["classifier.labels_per_class", "greater than or equal to 1"],
        ),
        ({"classifier": {"linear": {"c_grid": [1.0, -1.0]}}}, ["classifier.linear.c_grid", "> 0"]),
        ({"mlflow": {"model_name": "bad name/with slash"}}, ["mlflow.model_name", "letters, digits"]),
    ],
)
def test_bad_params_name_the_key_and_the_fix(data: dict, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(data, "params.yaml")
    text = str(err.value)
    assert text.startswith("params.yaml: invalid params:")
    for needle in needles:
        assert needle in text, text


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: [digits\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_params(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(path)


def test_cli_refuses_bad_params_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("pretrain:\n  epochs: -3\n")
    out = tmp_path / "prepared"
    assert main(["--params", str(bad), "prepare", "--out", str(out)]) == 2
    assert "pretrain.epochs" in capsys.readouterr().err
    assert not out.exists()


def test_variant_options_are_typed() -> None:
    params = parse_params({"model": {"name": "conv", "conv": {}}})
    assert params.model.options().model_dump() == {}
    assert params.flat()["model.name"] == "conv"
