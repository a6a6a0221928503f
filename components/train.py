"""train: the classifier head on encoder features; model selection on the validation split."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def train(
    params_json: str,
    execution_key: str,
    data: Input[Dataset],
    features: Input[Dataset],
    autoencoder: Input[Model],
    classifier: Output[Model],
    metrics: Output[Metrics],
    plots: Output[Artifact],
):
    """Fit classifier.head (the pipeline gives this task a GPU when the head fine-tunes the encoder)."""
    from aepipe import kfp_support

    result = kfp_support.run_stage_json(
        "train",
        params_json,
        execution_key,
        data_dir=data.path,
        features_dir=features.path,
        model_dir=autoencoder.path,
        classifier_dir=classifier.path,
        metrics_path=metrics.path,
        plots_dir=plots.path,
    )
    kfp_support.log_scalars(metrics, result)
