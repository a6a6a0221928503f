"""Log the encoder+classifier pair as ONE pyfunc model and register it under an alias."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

import aepipe
from aepipe.errors import TrackingError

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def pip_requirements() -> list[str]:
    # Given explicitly: MLflow's inference of requirements costs ~11 s per log_model call.
    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "numpy", "pandas", "pydantic", "scikit-learn")]


def signature(input_shape: tuple[int, int, int], n_classes: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *input_shape))])
    outputs = Schema([ColSpec(DataType.string, "class"), ColSpec(DataType.long, "class_index"), ColSpec(Array(DataType.double), "probabilities")])
    return ModelSignature(inputs=inputs, outputs=outputs)


@dataclass
class Registered:
    name: str
    version: str
    alias: str
    model_uri: str
    run_id: str


def log_and_register(
    run_id: str,
    autoencoder_dir: str | Path,
    classifier_dir: str | Path,
    example: np.ndarray,
    n_classes: int,
    name: str,
    alias: str,
    tags: dict[str, str],
    description: str,
) -> Registered:
    import mlflow
    from mlflow import MlflowClient

    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # The pyfunc's predict has no type hints on purpose: the signature below is the contract.
        warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            code_paths=[str(Path(aepipe.__file__).parent)],
            artifacts={"autoencoder": str(autoencoder_dir), "classifier": str(classifier_dir)},
            signature=signature(tuple(example.shape[1:]), n_classes),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=name,
            tags=tags,
        )
    if info.registered_model_version is None:
        raise TrackingError(f"MLflow logged the model but did not register it under {name!r}")
    client = MlflowClient()
    ver = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, ver, key, value)
    client.update_model_version(name, ver, description=description)
    client.set_registered_model_alias(name, alias, ver)
    return Registered(name, ver, alias, f"models:/{name}/{ver}", run_id)
