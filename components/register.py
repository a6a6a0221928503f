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
    pretrain_metrics: Input[Metrics],
    train_metrics: Input[Metrics],
    eval_metrics: Input[Metrics],
    pretrain_plots: Input[Artifact],
    evaluate_plots: Input[Artifact],
    registration: Output[Artifact],
):
    """Log the pair as a candidate with its review pack, register the best candidate (validation)."""
    import tempfile

    from aepipe import kfp_support
    from aepipe.paths import METRIC_FILES

    with tempfile.TemporaryDirectory() as metrics_dir, tempfile.TemporaryDirectory() as plots_dir:
        kfp_support.gather(
            metrics_dir,
            {
                METRIC_FILES["pretrain"]: pretrain_metrics.path,
                METRIC_FILES["train"]: train_metrics.path,
                METRIC_FILES["evaluate"]: eval_metrics.path,
            },
        )
        kfp_support.gather(plots_dir, dirs=[pretrain_plots.path, evaluate_plots.path])
        result = kfp_support.run_stage_json(
            "register",
            params_json,
            execution_key,
            data_dir=data.path,
            model_dir=autoencoder.path,
            classifier_dir=classifier.path,
            metrics_dir=metrics_dir,
            plots_dir=plots_dir,
            out_path=registration.path,
        )
    registration.metadata.update({k: result[k] for k in ("model_name", "version", "alias", "model_uri")})
