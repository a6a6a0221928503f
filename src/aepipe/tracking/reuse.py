"""Start pretraining from a registered encoder (``pretrain.init_from: models:/NAME-encoder@champion``).

The encoder models that ``register`` logs carry the whole autoencoder as an artifact, so a new
classifier (or a longer pretraining) can build on a promoted encoder.
"""

from __future__ import annotations

from pathlib import Path

from aepipe.errors import ModelError, TrackingError
from aepipe.models.base import AutoEncoder


def load_registered_autoencoder(
    uri: str, input_shape: tuple[int, int, int], variant: str
) -> tuple[AutoEncoder, str]:
    """(autoencoder, the model version it came from). Refuses a mismatched shape or variant."""
    import mlflow

    from aepipe.models.io import load_autoencoder
    from aepipe.tracking.lineage import client

    c = client()
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:
        raise TrackingError(
            f"pretrain.init_from: cannot download {uri!r} ({str(exc)[:200]}); check the name/alias in the "
            "MLflow UI"
        ) from None
    source = uri
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].split("@", 1)
        source = f"models:/{name}/{c.get_model_version_by_alias(name, alias).version}"
    from mlflow.models import Model

    try:
        artifacts = Model.load(str(local / "MLmodel")).flavors["python_function"].get("artifacts", {})
        ae_dir = local / artifacts["autoencoder"]["path"]
    except (OSError, KeyError, TypeError):
        ae_dir = None
    if ae_dir is None or not ae_dir.is_dir():
        raise ModelError(
            f"pretrain.init_from: {uri!r} holds no autoencoder artifact; point it at an aepipe encoder model "
            "(<name>-encoder)"
        )
    model = load_autoencoder(ae_dir)
    if tuple(model.spec.input_shape) != tuple(input_shape):
        raise ModelError(
            f"pretrain.init_from: {source} takes images {model.spec.input_shape} but the data is "
            f"{input_shape}; use an encoder trained on this data"
        )
    if model.spec.name != variant:
        raise ModelError(
            f"pretrain.init_from: {source} is a {model.spec.name!r} autoencoder but model.name is "
            f"{variant!r}; set model.name: {model.spec.name}"
        )
    return model, source
