"""evaluate: the only stage that touches the test split; metrics, confusion matrix, HTML report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def evaluate(
    params_json: str,
    execution_key: str,
    data: Input[Dataset],
    autoencoder: Input[Model],
    classifier: Input[Model],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    plots: Output[Artifact],
):
    """Score the pair on raw test images; metrics.path holds eval.json, which register reads."""
    from pathlib import Path

    from aepipe import kfp_support

    result = kfp_support.run_stage_json(
        "evaluate",
        params_json,
        execution_key,
        data_dir=data.path,
        model_dir=autoencoder.path,
        classifier_dir=classifier.path,
        metrics_path=metrics.path,
        plots_dir=plots.path,
    )
    figures = Path(plots.path)
    kfp_support.log_scalars(metrics, result)
    kfp_support.log_confusion(confusion, figures / "confusion.csv", data.path)
    kfp_support.write_report(
        report.path,
        "Evaluation (test split)",
        result,
        [figures / "confusion.png", figures / "reconstructions.png"],
    )
