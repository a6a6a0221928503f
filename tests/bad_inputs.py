"""The table of bad inputs: each case builds a bad params/data set-up in a copy of a workspace
where the whole pipeline has run (every stage's outputs, and a registered model in its MLflow
store); the CLI must refuse it with one message naming the file or key and the fix, and leave
every earlier output (files and registry) as it was.

``python -m tests.bad_inputs`` prints the table with the message each case gets.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

STAGE_ORDER = ("prepare", "pretrain", "extract", "train", "evaluate", "register")
# The workspace every case starts from: the pipeline on digits with a tiny model.
GOLDEN_PARAMS = (
    "model:\n  name: conv\n  width: 4\n  depth: 1\npretrain:\n  epochs: 1\n"
    "mlflow:\n  experiment: bad-inputs\n  model_name: bad-inputs\n"
)


@dataclass
class Case:
    name: str
    build: Callable[[Path], str]  # writes inputs under the workspace, returns the params.yaml text
    expect: list[str]  # fragments the error message must contain
    stage: str = "prepare"
    env: Callable[[Path], dict[str, str | None]] = field(default=lambda d: {})  # None = unset
    args: list[str] = field(default_factory=list)  # CLI flags after the stage (default: dvc.yaml's paths)
    skip: Callable[[], str | None] = field(default=lambda: None)  # a reason to skip it here


def _folder(root: Path, classes: dict[str, list[tuple[str, Image.Image | bytes]]]) -> Path:
    for cls, files in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, content in files:
            if isinstance(content, bytes):
                (root / cls / name).write_bytes(content)
            else:
                content.save(root / cls / name)
    return root


def _gray(n: int, size: tuple[int, int] = (8, 8), v: int = 0) -> list[tuple[str, Image.Image]]:
    return [(f"{i}.png", Image.new("L", size, v)) for i in range(n)]


def _folder_params(d: Path, classes: dict, extra: str = "") -> str:
    root = _folder(d / "imgs", classes)
    return f"data:\n  source: folder:{root}\n{extra}"


def _npz_params(d: Path, extra: str = "", **arrays: np.ndarray) -> str:
    np.savez(d / "data.npz", **arrays)
    return f"data:\n  source: npz:{d / 'data.npz'}\n{extra}"


def _xy(n: int = 30, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), np.arange(n) % classes


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3_experiment(d: Path) -> dict[str, str | None]:
    import mlflow

    uri = f"sqlite:///{d / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("s3-exp", artifact_location="s3://aepipe-artifacts/exp")
    return {
        "MLFLOW_TRACKING_URI": uri,
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_SHARED_CREDENTIALS_FILE": str(d / "none"),
        "AWS_CONFIG_FILE": str(d / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


X, Y = _xy()
CASES = [
    Case(
        "corrupt image file",
        lambda d: _folder_params(
            d, {"a": [*_gray(3), ("bad.png", b"\x89PNG\r\n\x1a\ngarbage")], "b": _gray(3, v=9)}
        ),
        ["bad.png", "cannot be decoded", "replace or remove"],
    ),
    Case(
        "non-image file in a class folder",
        lambda d: _folder_params(d, {"a": [*_gray(3), ("notes.txt", b"hello")], "b": _gray(3)}),
        ["notes.txt", "not an image file", "remove it"],
    ),
    Case(
        "empty class folder",
        lambda d: _folder_params(d, {"a": _gray(3), "b": []}),
        ["imgs/b", "class folder is empty", "add images or remove"],
    ),
    Case(
        "single-class dataset",
        lambda d: _folder_params(d, {"a": _gray(5)}),
        ["only one class", "at least 2 classes"],
    ),
    Case(
        "mixed sizes without data.image_size",
        lambda d: _folder_params(d, {"a": _gray(3), "b": _gray(3, (10, 12))}),
        ["different sizes", "data.image_size"],
    ),
    Case(
        "mixed grayscale and RGB",
        lambda d: _folder_params(
            d, {"a": _gray(3), "b": [(f"{i}.png", Image.new("RGB", (8, 8), (200, 0, 0))) for i in range(3)]}
        ),
        ["mixed grayscale and RGB", "data.channels"],
    ),
    Case(
        "npz with missing keys",
        lambda d: _npz_params(d, images=X, labels=Y),
        ["data.npz", "missing keys", "x_train + y_train", "x + y"],
    ),
    Case(
        "x/y length mismatch",
        lambda d: _npz_params(d, x=X, y=Y[:-4]),
        ["data.npz", "26 labels but x has 30 images", "same length"],
    ),
    Case(
        "labels out of range (negative)",
        lambda d: _npz_params(d, x=X, y=Y - 1),
        ["data.npz", "label -1", "out of range", "0..K-1", "unlabelled"],
    ),
    Case(
        "labels out of range (class_names)",
        lambda d: _npz_params(d, x=X, y=Y, class_names=np.array(["a", "b"])),
        ["label 2 is out of range for 2 class_names"],
    ),
    Case(
        "NaN in float images",
        lambda d: _npz_params(d, x=np.where(X > 250, np.nan, X / 255.0), y=Y),
        ["data.npz", "x contains NaN or inf"],
    ),
    Case(
        "float images outside [0, 1]",
        lambda d: _npz_params(d, x=X.astype(np.float32), y=Y),
        ["float images must lie in [0, 1]"],
    ),
    Case(
        "wrong dtype",
        lambda d: _npz_params(d, x=X.astype(np.complex64), y=Y),
        ["x has dtype complex64", "uint8"],
    ),
    Case("pickled object arrays", lambda d: _npz_pickled(d), ["pickled", "refused"]),
    Case(
        "npz that is not an archive",
        lambda d: (
            (d / "data.npz").write_bytes(b"not a zip file"),
            f"data:\n  source: npz:{d / 'data.npz'}\n",
        )[1],
        ["data.npz", "not a readable .npz"],
    ),
    Case(
        "missing dataset path",
        lambda d: f"data:\n  source: npz:{d / 'nowhere.npz'}\n",
        ["nowhere.npz", "not found", "data.source"],
    ),
    Case(
        "unknown model.name",
        lambda d: "model:\n  name: resnet9000\n",
        ["params.yaml", "model.name", "resnet9000", "allowed: conv"],
    ),
    Case(
        "wrong type in params",
        lambda d: "pretrain:\n  epochs: ten\n",
        ["params.yaml", "pretrain.epochs", "valid integer"],
    ),
    Case(
        "negative value in params",
        lambda d: "pretrain:\n  lr: -0.5\n",
        ["params.yaml", "pretrain.lr", "greater than 0"],
    ),
    Case(
        "unknown params key",
        lambda d: "pretrain:\n  epoch: 3\n",
        ["params.yaml", "pretrain.epoch", "unknown key", "epochs"],
    ),
    Case(
        "unreachable MLflow server",
        lambda d: GOLDEN_PARAMS,
        ["127.0.0.1", "unreachable", "MLFLOW_TRACKING_URI", "Outputs left as they were: data/prepared"],
        env=lambda d: {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"},
    ),
    Case(
        "missing S3 credentials",
        lambda d: "mlflow:\n  experiment: s3-exp\n",
        ["s3://aepipe-artifacts/exp", "no S3 credentials", "AWS_ACCESS_KEY_ID"],
        env=_s3_experiment,
    ),
    Case(
        "too few images per class",
        lambda d: _npz_params(d, x=X[:8], y=np.array([0, 0, 0, 0, 1, 1, 2, 2])),
        ["fewer than 3 training images"],
    ),
]


def _npz_pickled(d: Path) -> str:
    # an npz whose member is an object array: np.load(allow_pickle=False) must refuse it
    np.savez(d / "data.npz", x=np.array([X[0], "x"], dtype=object), y=Y[:2])
    return f"data:\n  source: npz:{d / 'data.npz'}\n"


# ---- issue 13: strict params, faithful images, labels, broken stage inputs ---------------------
# Cases after prepare run in the workspace's own set-up (GOLDEN_PARAMS) with one input broken.


def _golden(extra: str = "") -> Callable[[Path], str]:
    return lambda d: GOLDEN_PARAMS + extra


def _edit_json(path: str, change: Callable[[Any], Any], extra: str = "") -> Callable[[Path], str]:
    def build(d: Path) -> str:
        data = json.loads((d / path).read_text())
        data = change(data) or data
        (d / path).write_text(json.dumps(data))
        return GOLDEN_PARAMS + extra

    return build


def _write(path: str, content: bytes | str, extra: str = "") -> Callable[[Path], str]:
    def build(d: Path) -> str:
        target = d / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return GOLDEN_PARAMS + extra

    return build


def _then(first: Callable[[Path], Any], extra: str = "") -> Callable[[Path], str]:
    return lambda d: (first(d), GOLDEN_PARAMS + extra)[1]


def _images(d: Path, a: list[tuple[str, Image.Image]], extra: str = "") -> str:
    return _folder_params(d, {"a": a, "b": _gray(3, v=200)}, extra)


def _rgba(ink: int) -> Image.Image:
    rgba = np.full((8, 8, 4), ink, np.uint8)
    rgba[..., 3] = 0
    rgba[2:6, 3:5, 3] = 255
    return Image.fromarray(rgba, "RGBA")


def _link_loop(d: Path) -> str:
    text = _folder_params(d, {"a": _gray(3), "b": _gray(3, v=9)})
    os.symlink(d / "imgs" / "a" / "loop.png", d / "imgs" / "a" / "loop.png")
    return text


def _broken_link(d: Path) -> str:
    text = _folder_params(d, {"a": _gray(3), "b": _gray(3, v=9)})
    os.symlink(d / "gone.png", d / "imgs" / "b" / "x.png")
    return text


def _class_loop(d: Path) -> str:
    text = _folder_params(d, {"a": _gray(3), "b": _gray(3, v=9)})
    os.symlink(d / "imgs" / "c", d / "imgs" / "c")
    return text


def _npy_dir(d: Path, **arrays: np.ndarray) -> str:
    (d / "npy").mkdir()
    for name, arr in arrays.items():
        np.save(d / "npy" / f"{name}.npy", arr)
    return f"data:\n  source: npy:{d / 'npy'}\n"


def _other_autoencoder(d: Path) -> None:
    """A valid autoencoder of another width: its features do not fit the trained classifier."""
    from aepipe.models import ModelSpec, build_autoencoder
    from aepipe.models.io import save_autoencoder

    spec = json.loads((d / "models/autoencoder/spec.json").read_text())
    spec.pop("kind")
    spec["width"] = 8
    save_autoencoder(d / "other_ae", build_autoencoder(ModelSpec.from_json(spec)))


def _no_cuda() -> str | None:
    import torch

    return "a CUDA device is present" if torch.cuda.is_available() else None


RESTORE = "dvc checkout"
CASES += [
    # params.yaml
    Case(
        "duplicate key in a section",
        lambda d: "pretrain:\n  epochs: 3\n  lr: 0.01\n  epochs: 300\n",
        ["params.yaml", "line 4", "duplicate key pretrain.epochs", "first given on line 2"],
    ),
    Case(
        "duplicate section",
        lambda d: "pretrain:\n  epochs: 3\nmodel:\n  width: 8\npretrain:\n  lr: 0.1\n",
        ["params.yaml", "line 5", "duplicate key pretrain", "first given on line 1"],
    ),
    Case("empty params file", lambda d: "", ["params.yaml", "the file is empty", "every default"]),
    Case("params file of comments only", lambda d: "# defaults\n\n", ["params.yaml", "the file is empty"]),
    Case(
        "unknown top-level key",
        lambda d: "seed: 0\nepochs: 5\n",
        ["params.yaml", "line 2: epochs: unknown key", "pretrain"],
    ),
    Case(
        "YAML syntax error",
        lambda d: "data:\n  source: [digits\n",
        ["params.yaml", "line 3, column 1", "not valid YAML"],
    ),
    Case("section given as a value", lambda d: "pretrain: 3\n", ["line 1: pretrain: must be a section"]),
    Case(
        "unknown option of a model variant",
        lambda d: "model:\n  name: conv\n  conv:\n    dropout: 0.1\n",
        ["params.yaml", "line 4", "model.conv.dropout", "unknown key"],
    ),
    Case("bad data.alpha value", lambda d: "data:\n  alpha: gray\n", ["line 2: data.alpha", "'white'"]),
    Case(
        "device cuda without a GPU",
        _golden("device: cuda\n"),
        ["device is 'cuda' but no CUDA device", "set device: auto or cpu"],
        stage="pretrain",
        skip=_no_cuda,
    ),
    # images and labels
    Case(
        "float image outside [0, 1]",
        lambda d: _images(
            d, [(f"{i}.tif", Image.fromarray(np.full((8, 8), 900.0, np.float32))) for i in range(3)]
        ),
        ["0.tif", "float image with values 900..900", "must hold values in [0, 1]"],
    ),
    Case(
        "32-bit image beyond 16 bits",
        lambda d: _images(
            d, [(f"{i}.tif", Image.fromarray(np.full((8, 8), 70000, np.int32))) for i in range(3)]
        ),
        ["0.tif", "32-bit integer image with values 70000..70000", "8- or 16-bit"],
    ),
    Case(
        "content only in the alpha channel, white ink",
        lambda d: _images(d, [(f"{i}.png", _rgba(255)) for i in range(3)]),
        ["0.png", "vanishes over a white background", "set data.alpha: black"],
    ),
    Case(
        "transparency with data.alpha: refuse",
        lambda d: _images(d, [(f"{i}.png", _rgba(0)) for i in range(3)], "  alpha: refuse\n"),
        ["0.png", "data.alpha is refuse", "set data.alpha: white or black"],
    ),
    Case("symlink loop", _link_loop, ["loop.png: symlink loop", "remove it"]),
    Case("broken symlink", _broken_link, ["x.png: broken symlink", "gone.png", "fix or remove"]),
    Case("class folder that is a symlink loop", _class_loop, ["imgs/c: symlink loop"]),
    Case(
        "nested folder in a class folder",
        lambda d: _folder_params(d, {"a": _gray(3), "a/deeper": _gray(1), "b": _gray(3)}),
        ["imgs/a/deeper", "nested folder", "keep one level"],
    ),
    Case(
        "folder source path missing",
        lambda d: f"data:\n  source: folder:{d / 'nowhere'}\n",
        ["nowhere", "data.source folder not found"],
    ),
    Case(
        "folder without class subfolders",
        lambda d: ((d / "imgs").mkdir(), f"data:\n  source: folder:{d / 'imgs'}\n")[1],
        ["imgs: no class subfolders", "<class name>"],
    ),
    Case(
        "test labels never seen in training",
        lambda d: _npz_params(d, x_train=X, y_train=Y, x_test=X[:6], y_test=np.array([0, 1, 2, 0, 1, 7])),
        ["data.npz", "test labels ['7'] never occur in the training data"],
    ),
    Case(
        "one stray label",
        lambda d: _npz_params(d, x=X, y=np.where(np.arange(len(Y)) == 0, 999, Y)),
        ["['999'] have fewer than 3 training images"],
    ),
    Case(
        "non-integer labels",
        lambda d: _npz_params(d, x=X, y=Y + 0.5),
        ["data.npz", "y holds non-integer values", "0..K-1"],
    ),
    Case(
        "labels as a 2-D array",
        lambda d: _npz_params(d, x=X, y=np.stack([Y, Y], axis=1)),
        ["data.npz", "y has shape (30, 2)", "1-D array"],
    ),
    Case(
        "x_test without y_test",
        lambda d: _npz_params(d, x_train=X, y_train=Y, x_test=X[:3]),
        ["data.npz", "only one of x_test / y_test", "both or neither"],
    ),
    Case(
        "images smaller than 4x4",
        lambda d: _npz_params(d, x=X[:, :3, :3], y=Y),
        ["data.npz", "x images are 3×3", "at least 4×4"],
    ),
    Case(
        "npy source with float images",
        lambda d: _npy_dir(d, x=X.astype(np.float32), y=Y),
        ["x.npy", "dtype float32", "must hold uint8"],
    ),
    Case("npy source without labels", lambda d: _npy_dir(d, x=X), ["npy: missing y.npy", "y.npy (labels)"]),
    # a model, features or prepared data broken between stages
    Case(
        "edited spec.json: unknown option",
        _edit_json("models/autoencoder/spec.json", lambda s: s["options"].update(foo=1)),
        ["models/autoencoder/spec.json", "options.foo", "Extra inputs are not permitted", RESTORE],
        stage="extract",
    ),
    Case(
        "edited spec.json: width not a number",
        _edit_json("models/autoencoder/spec.json", lambda s: s.update(width="wide")),
        ["models/autoencoder/spec.json", "width must be a positive integer (got 'wide')", RESTORE],
        stage="extract",
    ),
    Case(
        "edited spec.json: another width",
        _edit_json("models/autoencoder/spec.json", lambda s: s.update(width=8)),
        ["models/autoencoder: weights.pt does not match", "was spec.json edited", RESTORE],
        stage="extract",
    ),
    Case(
        "spec.json that is not JSON",
        _write("models/autoencoder/spec.json", "{'name': conv"),
        ["models/autoencoder/spec.json: not valid JSON", RESTORE],
        stage="extract",
    ),
    Case(
        "spec.json holding a list",
        _write("models/autoencoder/spec.json", "[1, 2]"),
        ["models/autoencoder/spec.json", "must hold a JSON object", RESTORE],
        stage="extract",
    ),
    Case(
        "corrupt weights.pt",
        _write("models/autoencoder/weights.pt", b"not a torch file"),
        ["models/autoencoder/weights.pt", "cannot be loaded as a state_dict", "weights_only=True"],
        stage="extract",
    ),
    Case(
        "classifier given as the autoencoder",
        _golden(),
        ["models/classifier/spec.json", "is a classifier, not an autoencoder"],
        stage="extract",
        args=["--model", "models/classifier"],
    ),
    Case(
        "autoencoder directory missing",
        _golden(),
        ["nowhere: no saved autoencoder", "run the stage that trains it"],
        stage="extract",
        args=["--model", "nowhere"],
    ),
    Case(
        "prepared dataset missing",
        _golden(),
        ["nowhere: not a prepared dataset", "run `aepipe prepare` first"],
        stage="pretrain",
        args=["--data", "nowhere"],
    ),
    Case(
        "meta.json that is not JSON",
        _write("data/prepared/meta.json", "{"),
        ["data/prepared: prepared dataset is unreadable", "re-run `aepipe prepare`"],
        stage="pretrain",
    ),
    Case(
        "meta.json without its classes",
        _edit_json("data/prepared/meta.json", lambda m: m.pop("classes") and None),
        ["data/prepared/meta.json: missing key(s) classes", "re-run `aepipe prepare`"],
        stage="train",
    ),
    Case(
        "truncated x.npy",
        _then(
            lambda d: (d / "data/prepared/x.npy").write_bytes((d / "data/prepared/x.npy").read_bytes()[:999])
        ),
        ["data/prepared: prepared dataset is unreadable", "re-run `aepipe prepare`"],
        stage="extract",
    ),
    Case(
        "features missing",
        _then(lambda d: shutil.rmtree(d / "features")),
        ["features/train.npy: features not found", "run `aepipe extract` first"],
        stage="train",
    ),
    Case(
        "features of another dataset",
        _then(lambda d: np.save(d / "features/train.npy", np.zeros((5, 3), np.float32))),
        ["features/train.npy: 5 rows but the train split has 1293 images", "re-run `aepipe extract`"],
        stage="train",
    ),
    Case(
        "features file that is not .npy",
        _write("features/val.npy", b"garbage"),
        ["features/val.npy: not a readable features file", "re-run `aepipe extract`"],
        stage="train",
    ),
    Case(
        "classifier spec.json without in_dim",
        _edit_json("models/classifier/spec.json", lambda s: s.pop("in_dim") and None),
        ["models/classifier/spec.json", "missing key 'in_dim'", RESTORE],
        stage="evaluate",
    ),
    Case(
        "classifier paired with another autoencoder",
        _then(_other_autoencoder),
        [
            "models/classifier/spec.json: the classifier reads",
            "the autoencoder in other_ae gives",
            "re-run `aepipe train`",
        ],
        stage="evaluate",
        args=["--model", "other_ae"],
    ),
    Case(
        "classifier for another class count",
        _edit_json("data/prepared/meta.json", lambda m: m["classes"].append("extra") and None),
        ["models/classifier/spec.json: the classifier has 10 classes but data/prepared has 11"],
        stage="evaluate",
    ),
    Case(
        "fine-tuned head without its encoder",
        _edit_json("models/classifier/spec.json", lambda s: s.update(finetuned_encoder=True)),
        ["fine-tuned with its encoder", "models/classifier/autoencoder is missing", "re-run `aepipe train`"],
        stage="evaluate",
    ),
    Case(
        "register before evaluate",
        _then(lambda d: (d / "metrics/eval.json").unlink()),
        ["metrics/eval.json", "not found; run `aepipe evaluate` first"],
        stage="register",
    ),
    Case(
        "init_from a model that is not registered",
        lambda d: GOLDEN_PARAMS.replace(
            "  epochs: 1\n", "  epochs: 1\n  init_from: models:/nobody@champion\n"
        ),
        ["pretrain.init_from", "models:/nobody@champion", "check the name/alias"],
        stage="pretrain",
    ),
]


def build_workspace(root: Path) -> Path:
    """Run every stage once in ``root`` (in this process), tracked in ``root/mlflow.db``."""
    from aepipe.cli import main

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(GOLDEN_PARAMS)
    with _env({"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}), _cwd(root):
        for stage in STAGE_ORDER:
            with contextlib.redirect_stdout(io.StringIO()):
                code = main([stage])
            assert code == 0, f"workspace: {stage} failed"
    return root


def copy_workspace(golden: Path, dest: Path) -> Path:
    """A fresh copy; the MLflow artifacts stay in the original (the store points there)."""
    shutil.copytree(golden, dest, symlinks=True, ignore=shutil.ignore_patterns("mlruns"))
    return dest


def setup_case(case: Case, ws: Path) -> None:
    (ws / "params.yaml").write_text(case.build(ws))


def run_case(case: Case, ws: Path) -> tuple[int, str]:
    """``aepipe --params params.yaml <stage> <args>`` in-process in ``ws`` with the case's env;
    return (exit code, stderr)."""
    from aepipe.cli import main

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}", **case.env(ws)}
    err = io.StringIO()
    with _env(env), _cwd(ws), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--params", "params.yaml", case.stage, *case.args])
    return code, err.getvalue().strip()


@contextlib.contextmanager
def _env(values: dict[str, str | None]):
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def registry_state(ws: Path) -> dict[str, Any]:
    """Registered models, their versions, tags, descriptions and aliases in the workspace store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    state = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        state[model.name] = {
            "aliases": dict(model.aliases),
            "versions": sorted(
                (v.version, v.run_id, v.source, v.status, v.description, sorted(v.tags.items()))
                for v in versions
            ),
        }
    return state


if __name__ == "__main__":
    import tempfile

    print("| bad input | message |\n| --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        golden = build_workspace(Path(tmp) / "golden")
        for i, case in enumerate(CASES):
            if case.skip():
                continue
            ws = copy_workspace(golden, Path(tmp) / str(i))
            setup_case(case, ws)
            code, msg = run_case(case, ws)
            print(f"| {case.name} | exit {code}: `{msg.replace('|', '/')}` |")


# --- Registry, promotion and predict (issue 12) -------------------------------------------------
# Commands other than the stages: each case builds its set-up under the case dir and gives the
# argv and the working directory; the message must name the path and the fix, and nothing (no
# mlflow.db, no outputs) may be created.


@dataclass
class CommandCase:
    name: str
    build: Callable[[Path], tuple[list[str], Path]]  # -> (argv after `aepipe`, working directory)
    expect: list[str]
    command: str


def _fake_model(d: Path, artifacts: dict[str, str]) -> Path:
    """An MLmodel shaped like aepipe's models-from-code pyfunc (refusals happen before any load)."""
    import yaml

    model = d / "model"
    for rel in artifacts.values():
        (model / rel).mkdir(parents=True, exist_ok=True)
    flavor = {
        "loader_module": "mlflow.pyfunc.loaders.code_model",
        "model_code_path": "pyfunc_encoder.py",
        "artifacts": {k: {"path": v} for k, v in artifacts.items()},
    }
    (model / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": flavor}}))
    return model


def _png(d: Path) -> Path:
    Image.new("L", (8, 8), 0).save(d / "img.png")
    return d / "img.png"


def _loop(d: Path) -> Path:
    (d / "loop.png").symlink_to(d / "loop.png")
    return d / "loop.png"


def _objects_npy(d: Path) -> Path:
    np.save(d / "objects.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    return d / "objects.npy"


def _subdir(d: Path) -> Path:
    (d / "dvc.yaml").write_text("stages: {}\n")
    (d / "src").mkdir()
    return d / "src"


def _in_subdir(d: Path, *argv: str) -> tuple[list[str], Path]:
    """From <project>/src with --params ../params.yaml: the store is the project's, not src/'s."""
    return ["--params", "../params.yaml", *argv], _subdir(d)


COMMAND_CASES = [
    CommandCase(
        "predict on a directory",
        lambda d: (
            ["predict", "--model", str(_fake_model(d, {"autoencoder": "a", "classifier": "c"})), str(d)],
            d,
        ),
        ["a directory", "pass image files, .npy or .npz"],
        "predict",
    ),
    CommandCase(
        "predict on a symlink loop",
        lambda d: (["predict", "--model", "models:/m@champion", str(_loop(d))], d),
        ["loop.png", "symlink loop"],
        "predict",
    ),
    CommandCase(
        "predict on a .npy of pickled objects",
        lambda d: (
            [
                "predict",
                "--model",
                str(_fake_model(d, {"autoencoder": "a", "classifier": "c"})),
                str(_objects_npy(d)),
            ],
            d,
        ),
        ["objects.npy", "pickled (object) arrays", "refused"],
        "predict",
    ),
    CommandCase(
        "predict with the encoder-only model",
        lambda d: (["predict", "--model", str(_fake_model(d, {"autoencoder": "a"})), str(_png(d))], d),
        ["encoder-only model", "models:/aepipe-digits@champion"],
        "predict",
    ),
    CommandCase(
        "predict with a models:/ URI and no MLflow store",
        lambda d: (["predict", "--model", "models:/aepipe-digits@champion", str(_png(d))], d),
        ["no MLflow store at", "MLFLOW_TRACKING_URI"],
        "predict",
    ),
    CommandCase(
        "promote from a subdirectory of a project without a store",
        lambda d: _in_subdir(d, "promote"),
        ["no MLflow store at", "mlflow.db", "dvc repro"],
        "promote",
    ),
    CommandCase(
        "status without a store",
        lambda d: _in_subdir(d, "status"),
        ["no MLflow store at", "MLFLOW_TRACKING_URI"],
        "status",
    ),
    CommandCase(
        "rollback without a store",
        lambda d: _in_subdir(d, "rollback"),
        ["no MLflow store at"],
        "rollback",
    ),
    CommandCase(
        "register --best without a store",
        lambda d: _in_subdir(d, "register", "--best"),
        ["no MLflow store at", "MLFLOW_TRACKING_URI"],
        "register",
    ),
]


def run_command_case(case: CommandCase, d: Path) -> tuple[int, str]:
    """Run ``aepipe ARGV`` in-process from the case's working directory with no tracking URI set."""
    import contextlib
    import io

    from aepipe.cli import main

    d.mkdir(parents=True, exist_ok=True)
    (d / "params.yaml").write_text("seed: 0\n")
    argv, cwd = case.build(d)
    old_uri, old_cwd = os.environ.pop("MLFLOW_TRACKING_URI", None), os.getcwd()
    err = io.StringIO()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        os.chdir(old_cwd)
        if old_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
    return code, err.getvalue().strip()
