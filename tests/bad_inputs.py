"""The table of bad inputs: each case builds a bad params/data set-up in a directory; the CLI must
refuse it with a message naming the file or key and the fix, and leave existing outputs intact.

``python -m tests.bad_inputs`` prints the table with the message each case gets.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Case:
    name: str
    build: Callable[[Path], str]  # writes inputs under the dir, returns the params.yaml text
    expect: list[str]  # fragments the error message must contain
    stage: str = "prepare"
    env: Callable[[Path], dict[str, str | None]] = field(default=lambda d: {})  # None = unset


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
            d, {"a": _gray(3) + [("bad.png", b"\x89PNG\r\n\x1a\ngarbage")], "b": _gray(3, v=9)}
        ),
        ["bad.png", "cannot be decoded", "replace or remove"],
    ),
    Case(
        "non-image file in a class folder",
        lambda d: _folder_params(d, {"a": _gray(3) + [("notes.txt", b"hello")], "b": _gray(3)}),
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
        ["data.npz", "label -1", "out of range", "0..K-1"],
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
        lambda d: "",
        ["127.0.0.1", "unreachable", "MLFLOW_TRACKING_URI", "Local outputs were left"],
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


def run_case(case: Case, d: Path, out: Path) -> tuple[int, str]:
    """Run ``aepipe --params P <stage>`` in-process with the case's env; return (exit code, stderr)."""
    import contextlib
    import io

    from aepipe.cli import main

    d.mkdir(parents=True, exist_ok=True)
    (d / "params.yaml").write_text(case.build(d))
    # Every case starts from a fresh default store, as on a clean clone (CI): creating it must not
    # add noise before the error line.
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", **case.env(d)}
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["--params", str(d / "params.yaml"), case.stage, "--out", str(out)])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, err.getvalue().strip()


if __name__ == "__main__":
    import tempfile

    print("| bad input | message |\n| --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            code, msg = run_case(case, Path(tmp) / str(i), Path(tmp) / "out")
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
