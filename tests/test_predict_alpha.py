"""The pair model records the training run's `data.alpha`, and `aepipe predict` reads image files
with transparency over that background unless told otherwise.

Before this record, `--alpha` defaulted to white whatever the model was trained on: a model
trained on transparent images over black got other pixels at predict time, with no error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aepipe
from aepipe.cli import main
from aepipe.config import parse_params
from aepipe.errors import DataError
from aepipe.models.io import load_pair
from aepipe.predict import load_images, resolve_alpha
from aepipe.stages import extract, prepare, pretrain, train
from aepipe.tracking.registry import PAIR_CODE, pair_signature, pip_requirements

pytestmark = pytest.mark.slow

H = W = 8


def _la_image(i: int, cls: int) -> Image.Image:
    """Gray ink drawn only through the alpha channel: over white the ink is darker than the
    background, over black lighter, so the two backgrounds give different pixels."""
    rng = np.random.default_rng(100 * cls + i)
    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0] = 120 + int(rng.integers(0, 60))
    alpha = np.zeros((H, W), np.uint8)
    if cls == 0:
        alpha[1:7, 3 + i % 2] = 255  # a vertical stroke
    else:
        alpha[3 + i % 2, 1:7] = 255  # a horizontal one
    alpha[0, 0] = 128  # half transparent
    la[..., 1] = alpha
    return Image.fromarray(la, "LA")


@pytest.fixture(scope="module")
def trained_over_black(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import mlflow

    root = tmp_path_factory.mktemp("predict-alpha")
    for cls in (0, 1):
        (root / "imgs" / f"c{cls}").mkdir(parents=True)
        for i in range(12):
            _la_image(i, cls).save(root / "imgs" / f"c{cls}" / f"{i}.png")
    p = parse_params(
        {
            "data": {"source": f"folder:{root / 'imgs'}", "channels": 1, "alpha": "black"},
            "model": {"name": "conv", "width": 4, "depth": 1},
            "pretrain": {"epochs": 1},
            "classifier": {"head": "linear"},
            "device": "cpu",
        }
    )
    prepare.run(p, root / "data")
    pretrain.run(p, root / "data", root / "ae", root / "pretrain.json", root / "plots")
    extract.run(p, root / "data", root / "ae", root / "features")
    train.run(
        p, root / "data", root / "features", root / "ae", root / "clf", root / "train.json", root / "plots"
    )
    mlflow.pyfunc.save_model(
        path=str(root / "pair"),
        python_model=str(PAIR_CODE),
        code_paths=[str(Path(aepipe.__file__).parent)],
        artifacts={"autoencoder": str(root / "ae"), "classifier": str(root / "clf")},
        signature=pair_signature((1, H, W)),
        input_example=np.zeros((1, 1, H, W), np.uint8),
        pip_requirements=pip_requirements(),
    )
    return {"root": root, "pair": root / "pair", "images": root / "imgs"}


def _predict_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list, str]:
    capsys.readouterr()
    code = main(["predict", "--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else [], captured.err


def test_prepare_and_train_record_the_background(trained_over_black: dict[str, Path]) -> None:
    root = trained_over_black["root"]
    assert json.loads((root / "data" / "meta.json").read_text())["alpha"] == "black"
    assert json.loads((root / "clf" / "spec.json").read_text())["data_alpha"] == "black"


def test_predict_reads_transparent_files_over_the_recorded_background(
    trained_over_black: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(f) for f in sorted(trained_over_black["images"].glob("*/*.png"))][:6]
    pair, _ = load_pair(trained_over_black["root"] / "ae", trained_over_black["root"] / "clf", "cpu")
    over = {a: pair.predict_proba(load_images(files, (1, H, W), a)[1]) for a in ("black", "white")}
    assert not np.allclose(over["black"], over["white"])  # the background changes what the model says

    code, rows, err = _predict_json(["--model", str(trained_over_black["pair"]), *files], capsys)
    assert code == 0, err
    got = np.array([r["probabilities"] for r in rows])
    np.testing.assert_allclose(got, over["black"], atol=1e-6)  # no --alpha: the recorded black

    code, rows, _ = _predict_json(
        ["--model", str(trained_over_black["pair"]), "--alpha", "black", *files], capsys
    )
    assert code == 0 and np.allclose([r["probabilities"] for r in rows], over["black"], atol=1e-6)


def test_another_background_than_the_training_one_is_refused(
    trained_over_black: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    img = str(next(trained_over_black["images"].glob("c0/*.png")))
    code, _, err = _predict_json(
        ["--model", str(trained_over_black["pair"]), "--alpha", "white", img], capsys
    )
    assert code == 2
    assert "--alpha white" in err and "data.alpha: black" in err and "pass --alpha black" in err


def test_a_bad_recorded_value_names_the_spec_file(
    trained_over_black: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    pair = tmp_path / "pair"
    shutil.copytree(trained_over_black["pair"], pair)
    specs = list(pair.rglob("spec.json"))
    spec_path = next(s for s in specs if json.loads(s.read_text()).get("kind") == "classifier")
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "data_alpha": "grey"}))
    img = str(next(trained_over_black["images"].glob("c0/*.png")))
    capsys.readouterr()
    assert main(["predict", "--model", str(pair), img]) != 0
    err = capsys.readouterr().err
    assert "spec.json" in err and "data_alpha is 'grey'" in err and "white, black, refuse" in err


@pytest.mark.parametrize(
    ("given", "recorded", "expected"),
    [
        (None, "black", "black"),  # the recorded background by default
        (None, "refuse", "refuse"),
        (None, None, "white"),  # a model from before the record: the old default
        ("black", None, "black"),
        ("white", "white", "white"),
        ("white", "refuse", "white"),  # trained on no transparent image: free to choose
        ("refuse", "black", "refuse"),  # refusing transparent files gives no other pixels
    ],
)
def test_resolve_alpha(given: str | None, recorded: str | None, expected: str) -> None:
    assert resolve_alpha(given, recorded, "models:/m/1") == expected  # type: ignore[arg-type]


def test_resolve_alpha_refuses_the_other_colour() -> None:
    with pytest.raises(DataError, match=r"--alpha black: models:/m/1 was trained .* over white"):
        resolve_alpha("black", "white", "models:/m/1")
