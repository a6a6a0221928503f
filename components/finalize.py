"""finalize: the pipeline's exit task; when any task failed, the MLflow parent run ends FAILED.

It runs after every other task, whatever their outcome (``dsl.ExitHandler``). On success it does
nothing (``register`` already finished the parent run). On failure it marks the run of this
execution FAILED, and any stage run a killed pod left RUNNING as KILLED, so no run stays RUNNING.
"""

from kfp import dsl

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def finalize(params_json: str, execution_key: str, status: dsl.PipelineTaskFinalStatus):
    """Close this execution's MLflow runs when the pipeline did not succeed."""
    from aepipe import kfp_support

    kfp_support.finalize_execution(params_json, execution_key, status.state, status.error_message or "")
