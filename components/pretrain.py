"""pretrain: fit the autoencoder without labels; the model directory is the DVC one."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def pretrain(
    params_json: str,
    execution_key: str,
    data: Input[Dataset],
    autoencoder: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    plots: Output[Artifact],
):
    """Train the autoencoder (GPU when the task gets one); metrics JSON and a loss-curve report."""
    from pathlib import Path

    from aepipe import kfp_support

    result = kfp_support.run_stage_json(
        "pretrain",
        params_json,
        execution_key,
        data_dir=data.path,
        model_dir=autoencoder.path,
        metrics_path=metrics.path,
        plots_dir=plots.path,
    )
    kfp_support.log_scalars(metrics, result)
    kfp_support.write_report(
        report.path, "Autoencoder pretraining", result, [Path(plots.path) / "pretrain_loss.png"]
    )
