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
        # registering onto the promotion aliases would skip the gate and the audit trail
        ({"mlflow": {"alias": "champion"}}, ["mlflow.alias", "only `aepipe promote`", "Use challenger"]),
        ({"mlflow": {"alias": "Previous-Champion"}}, ["mlflow.alias", "skip both"]),
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


# ---- params.yaml holds every default; strict YAML (issue 13) ------------------------------------


def _flat(data: object, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out: dict[str, object] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def test_every_default_lives_in_params_yaml_with_the_same_value() -> None:
    """DVC tracks params by their value in params.yaml: a default that lives only in config.py
    (as mlflow.selection_metric and pretrain.init_from did) changes without any stage re-running.
    So every field of every section, each variant's options included, is written in the file,
    with the value the code would use without it."""
    from aepipe.models import REGISTRY

    defaults = Params().model_dump(mode="json")
    for name, variant in REGISTRY.items():
        defaults["model"][name] = variant.config().model_dump(mode="json")
    in_file = _flat(yaml.safe_load((REPO / "params.yaml").read_text()))
    expected = _flat(defaults)
    missing = sorted(set(expected) - set(in_file))
    assert not missing, f"params.yaml lacks these defaults (add them with a comment): {missing}"
    differ = {k: (expected[k], in_file[k]) for k in expected if in_file[k] != expected[k]}
    assert not differ, f"params.yaml and config.py disagree (code default, file value): {differ}"
    # the file may add entries only where the code default is an open mapping (per-stage resources)
    extra = sorted(k for k in set(in_file) - set(expected) if not k.startswith("kubeflow.resources."))
    assert not extra, f"keys in params.yaml that the code does not know: {extra}"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "pretrain:\n  epochs: 3\n  lr: 0.01\n  epochs: 300\n",
            ["line 4", "duplicate key pretrain.epochs", "first given on line 2"],
        ),
        (
            "pretrain:\n  epochs: 3\ndata:\n  seed: 1\npretrain:\n  lr: 0.1\n",
            ["line 5", "duplicate key pretrain", "first given on line 1"],
        ),
        (
            "model:\n  vae:\n    beta: 1.0\n    beta: 2.0\n",
            ["line 4", "duplicate key model.vae.beta", "first given on line 3"],
        ),
        ("", ["the file is empty", "every default"]),
        ("# nothing\n\n# but comments\n", ["the file is empty"]),
        ("seed: 0\ncolour: 1\n", ["line 2: colour: unknown key", "pretrain"]),
        ("data:\n  seed: 0\n  sourse: digits\n", ["line 3: data.sourse: unknown key", "source"]),
        ("pretrain:\n  lr: 0.01\n  epochs: ten\n", ["line 3: pretrain.epochs", "'ten'"]),
        ("model:\n  name: vae\n  vae:\n    beta: x\n", ["line 4:", "model.vae.beta"]),
        ("pretrain:\n", ["line 1: pretrain: must be a section"]),
        ("data:\n  source: [digits\n", ["line 3, column 1: not valid YAML"]),
        ("a: 1\n---\nb: 2\n", ["not valid YAML", "single document"]),
    ],
)
def test_strict_params_name_the_line(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_explicit_empty_mapping_still_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("{}\n")
    assert load_params(path) == Params()


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        "pretrain: &p\n  epochs: 2\nclassifier:\n  mlp:\n    <<: {max_epochs: 3}\n    patience: 2\n"
    )
    params = load_params(path)
    assert params.pretrain.epochs == 2 and params.classifier.mlp.max_epochs == 3


def test_dotted_overrides_are_typed_as_yaml_and_validated() -> None:
    from aepipe.config import apply_overrides

    base = load_params(REPO / "params.yaml")
    params = apply_overrides(
        base,
        [
            "pretrain.epochs=7",
            "pretrain.lr=1e-3",
            "classifier.labels_per_class=null",
            "classifier.mlp.hidden=[64, 32]",
            "model.vae={beta: 2}",
            "data.source=npz:/tmp/x.npz",
        ],
        values={"seed": 5, "classifier.labels_per_class": 10},  # typed values apply last
    )
    assert params.pretrain.epochs == 7 and params.pretrain.lr == pytest.approx(1e-3)
    assert params.classifier.mlp.hidden == [64, 32] and params.classifier.labels_per_class == 10
    assert params.model.options("vae").beta == 2.0 and params.data.source == "npz:/tmp/x.npz"
    assert params.seed == 5
    assert apply_overrides(base, []) is base


@pytest.mark.parametrize(
    ("item", "needles"),
    [
        ("pretrain.epoch=3", ["--set overrides", "pretrain.epoch", "unknown key"]),
        ("pretrain.epochs=ten", ["pretrain.epochs", "integer"]),
        ("pretrain.epochs", ["--set 'pretrain.epochs': expected KEY=VALUE"]),
        ("=3", ["expected KEY=VALUE"]),
        ("seed.x=1", ["seed is a value, not a section"]),
    ],
)
def test_bad_overrides_name_the_key(item: str, needles: list[str]) -> None:
    from aepipe.config import apply_overrides

    with pytest.raises(ConfigError) as info:
        apply_overrides(load_params(REPO / "params.yaml"), [item], "bench params", flag="--set")
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_the_aliases_params_may_not_name_are_those_promotion_moves() -> None:
    from aepipe.config import PROMOTION_ALIASES
    from aepipe.tracking.promotion import CHAMPION, PREVIOUS

    assert set(PROMOTION_ALIASES) == {CHAMPION, PREVIOUS}


def test_aepipe_params_validates_the_file_and_prints_every_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: `aepipe params` validates params.yaml and prints every value, flattened."""
    import json

    capsys.readouterr()
    assert main(["--params", str(REPO / "params.yaml"), "params"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = json.loads(json.dumps(load_params(REPO / "params.yaml").flat(), default=str))
    assert printed == expected
    assert (
        printed["pretrain.epochs"] == yaml.safe_load((REPO / "params.yaml").read_text())["pretrain"]["epochs"]
    )
    bad = tmp_path / "params.yaml"
    bad.write_text("pretrain:\n  epochs: -3\n")
    assert main(["--params", str(bad), "params"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "pretrain.epochs" in err
