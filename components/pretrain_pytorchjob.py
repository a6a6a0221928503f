"""pretrain on several pods: submit a Training Operator PyTorchJob, wait, bring its outputs back.

Used instead of ``pretrain`` when ``kubeflow.pytorchjob.in_pipeline`` is true; same inputs and
outputs, so extract/train/evaluate/register do not change. The job's pods run the very same
``aepipe pretrain`` under torchrun (``aepipe.pytorchjob``).
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def pretrain_pytorchjob(
    params_json: str,
    execution_key: str,
    image: str,
    data: Input[Dataset],
    autoencoder: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    plots: Output[Artifact],
):
    """Stage data and params on the shared volume, run the PyTorchJob there, copy its outputs back."""
    from pathlib import Path

    from aepipe import kfp_support
    from aepipe.pytorchjob import run_in_pipeline

    params = kfp_support.params_from_json(params_json)
    result = run_in_pipeline(
        params, image, execution_key, data.path, autoencoder.path, metrics.path, plots.path
    )
    kfp_support.log_scalars(metrics, result)
    kfp_support.write_report(
        report.path, "Autoencoder pretraining (PyTorchJob)", result, [Path(plots.path) / "pretrain_loss.png"]
    )
