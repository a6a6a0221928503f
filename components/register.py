"""register: the encoder+classifier pair as one MLflow model version with the challenger alias."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def register(
    params_json: str,
    execution_key: str,
    data: Input[Dataset],
    autoencoder: Input[Model],
    classifier: Input[Model],
    eval_metrics: Input[Metrics],
    registration: Output[Artifact],
):
    """Log and register the pair in MLflow; registration.path is the JSON record DVC also writes."""
    from aepipe import kfp_support

    result = kfp_support.run_stage_json(
        "register", params_json, execution_key, data_dir=data.path, model_dir=autoencoder.path,
        classifier_dir=classifier.path, eval_metrics_path=eval_metrics.path, out_path=registration.path,
    )
    registration.metadata.update({k: result[k] for k in ("model_name", "version", "alias", "model_uri")})
