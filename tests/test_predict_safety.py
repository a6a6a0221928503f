"""`aepipe predict` loads only aepipe's own pair model and runs nothing from the model directory.

Every malicious directory here carries a payload that would create a marker file if any of it were
executed or unpickled; each test asserts the marker does not exist afterwards."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import aepipe
from aepipe.cli import main
from aepipe.config import parse_params
from aepipe.data.prepared import load_prepared
from aepipe.models.io import load_pair
from aepipe.stages import extract, prepare, pretrain, train
from aepipe.tracking.registry import ENCODER_CODE, PAIR_CODE, pair_signature, pip_requirements

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling this creates the marker file (what a hostile pickle would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import mlflow

    root = tmp_path_factory.mktemp("predict-safety")
    p = parse_params({"model": {"name": "conv", "width": 4}, "pretrain": {"epochs": 1}})
    prepare.run(p, root / "data")
    pretrain.run(p, root / "data", root / "ae", root / "pretrain.json", root / "plots")
    extract.run(p, root / "data", root / "ae", root / "features")
    train.run(
        p, root / "data", root / "features", root / "ae", root / "clf", root / "train.json", root / "plots"
    )
    x = load_prepared(root / "data").split("test")[0][:3]
    code = [str(Path(aepipe.__file__).parent)]
    mlflow.pyfunc.save_model(
        path=str(root / "pair"),
        python_model=str(PAIR_CODE),
        code_paths=code,
        artifacts={"autoencoder": str(root / "ae"), "classifier": str(root / "clf")},
        signature=pair_signature(tuple(x.shape[1:])),
        input_example=x,
        pip_requirements=pip_requirements(),
    )
    mlflow.pyfunc.save_model(
        path=str(root / "encoder"),
        python_model=str(ENCODER_CODE),
        code_paths=code,
        artifacts={"autoencoder": str(root / "ae")},
        input_example=x,  # without it MLflow warns: it infers no signature from an ndarray hint
        pip_requirements=pip_requirements(),
    )
    for i in range(3):
        Image.fromarray(x[i, 0]).save(root / f"img{i}.png")
    return {"root": root, "x": x}


def run_predict(model: Path | str, images: list[Path], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["predict", "--json", "--model", str(model), *map(str, images)])
    out = capsys.readouterr()
    return code, out.out, out.err


def copy_model(models: dict, tmp_path: Path, which: str = "pair") -> Path:
    dest = tmp_path / f"{which}-copy"
    shutil.copytree(models["root"] / which, dest)
    return dest


def edit_mlmodel(model: Path, change) -> None:
    spec = yaml.safe_load((model / "MLmodel").read_text())
    change(spec)
    (model / "MLmodel").write_text(yaml.safe_dump(spec))


def test_project_model_predicts_with_installed_code_only(models, tmp_path: Path, capsys) -> None:
    import json

    marker = tmp_path / "pwned"
    imgs = [models["root"] / f"img{i}.png" for i in range(3)]
    code, out, err = run_predict(models["root"] / "pair", imgs, capsys)
    assert code == 0, err
    expected = load_pair(models["root"] / "ae", models["root"] / "clf")[0].predict_proba(models["x"])
    got = json.loads(out)
    assert [r["class"] for r in got] == [str(i) for i in expected.argmax(1)]

    # the same directory with its bundled code (code/aepipe, the models-from-code file) made
    # hostile: predict still works and none of it runs
    bad = copy_model(models, tmp_path)
    hook = f"\nfrom pathlib import Path as _P\n_P({str(marker)!r}).touch()\n"
    spec = yaml.safe_load((bad / "MLmodel").read_text())
    code_copy = bad / Path(spec["flavors"]["python_function"]["model_code_path"]).name
    assert code_copy.is_file() and bad in code_copy.parents  # never the installed source
    code_copy.write_text(hook)
    init = next(bad.rglob("aepipe/__init__.py"))
    init.write_text(init.read_text() + hook)
    code, out, err = run_predict(bad, imgs, capsys)
    assert code == 0, err
    assert [r["class"] for r in json.loads(out)] == [r["class"] for r in got]
    assert not marker.exists()


@pytest.mark.parametrize(
    "case, expect",
    [
        ("pickled python_model", "a pickled python_model"),
        ("pickled weights", "cannot be loaded as a state_dict"),
        ("extra file in an artifact", "holds only spec.json and weights.pt"),
        ("pickle flavor", "an aepipe model has only python_function"),
        ("artifact outside the directory", "points outside the model directory"),
        ("encoder-only model", "encoder-only model"),
        ("no MLmodel", "no MLmodel file"),
    ],
)
def test_anything_else_is_refused_before_it_runs(
    models, tmp_path: Path, capsys, case: str, expect: str
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(marker))
    model = copy_model(models, tmp_path, "encoder" if case == "encoder-only model" else "pair")
    pf = "python_function"
    if case == "pickled python_model":
        (model / "python_model.pkl").write_bytes(payload)

        def change(s):
            s["flavors"][pf]["python_model"] = "python_model.pkl"
            s["flavors"][pf]["loader_module"] = "mlflow.pyfunc.model"
            s["flavors"][pf].pop("model_code_path", None)

        edit_mlmodel(model, change)
    elif case == "pickled weights":
        (model / "artifacts/clf/weights.pt").write_bytes(payload)
    elif case == "extra file in an artifact":
        (model / "artifacts/clf/hook.py").write_text("print('hi')\n")
    elif case == "pickle flavor":
        (model / "model.pkl").write_bytes(payload)
        edit_mlmodel(model, lambda s: s["flavors"].update({"sklearn": {"pickled_model": "model.pkl"}}))
    elif case == "artifact outside the directory":
        outside = tmp_path / "elsewhere"
        shutil.copytree(models["root"] / "clf", outside)
        edit_mlmodel(model, lambda s: s["flavors"][pf]["artifacts"]["classifier"].update(path="../elsewhere"))
    elif case == "no MLmodel":
        (model / "MLmodel").unlink()
    code, out, err = run_predict(model, [models["root"] / "img0.png"], capsys)
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("aepipe predict: error: ") and expect in err, err
    assert "Traceback" not in err
    assert not marker.exists()


def test_unreadable_inputs_get_one_clear_message(models, tmp_path: Path, capsys) -> None:
    model = models["root"] / "pair"
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    (tmp_path / "objects.npy").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    np.save(tmp_path / "good.npy", models["x"])
    cases = {
        tmp_path: "a directory; pass image files",
        loop: "symlink loop",
        tmp_path / "missing.png": "not found",
        tmp_path / "objects.npy": "pickled (object) arrays, which are refused",
    }
    for path, expect in cases.items():
        code, _, err = run_predict(model, [path], capsys)
        assert code == 2 and expect in err and "Traceback" not in err, (path, err)
    code, out, err = run_predict(model, [tmp_path / "good.npy"], capsys)
    assert code == 0 and out.count('"input"') == len(models["x"]), err


def test_npz_input_predicts_like_the_same_images_as_files(models, tmp_path: Path, capsys) -> None:
    """README: .npy (N×C×H×W uint8) or .npz (key x) inputs; rows named file[i]; a wrong image
    shape refused naming the file and both shapes."""
    import json

    imgs = [models["root"] / f"img{i}.png" for i in range(3)]
    code, out, err = run_predict(models["root"] / "pair", imgs, capsys)
    assert code == 0, err
    from_files = json.loads(out)
    np.savez(tmp_path / "batch.npz", x=models["x"])
    code, out, err = run_predict(models["root"] / "pair", [tmp_path / "batch.npz"], capsys)
    assert code == 0, err
    from_npz = json.loads(out)
    assert [r["input"] for r in from_npz] == ["batch.npz[0]", "batch.npz[1]", "batch.npz[2]"]
    assert [r["probabilities"] for r in from_npz] == [r["probabilities"] for r in from_files]
    np.savez(tmp_path / "wrong.npz", x=models["x"][:, :, :4, :4])
    code, _, err = run_predict(models["root"] / "pair", [tmp_path / "wrong.npz"], capsys)
    assert code == 2
    assert "wrong.npz: images are (1, 4, 4) but the model expects (1, 8, 8)" in err, err
