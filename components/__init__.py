"""One KFP v2 component per stage, each a thin wrapper over ``aepipe.stages.runner.run_stage``.

Every component takes the validated params as one JSON string and the KFP run id as the MLflow
execution key, reads and writes artifact directories in the formats ``dvc repro`` produces, and
runs in the project image (``install_kfp_package=False``: the image already has kfp).
"""

from components.evaluate import evaluate
from components.extract import extract
from components.finalize import finalize
from components.prepare import prepare
from components.pretrain import pretrain
from components.pretrain_pytorchjob import pretrain_pytorchjob
from components.register import register
from components.train import train

COMPONENTS = {
    "prepare": prepare,
    "pretrain": pretrain,
    "extract": extract,
    "train": train,
    "evaluate": evaluate,
    "register": register,
}
# Drop-in for ``pretrain`` when kubeflow.pytorchjob.in_pipeline is true (multi-pod DDP).
PRETRAIN_VARIANTS = {"pretrain": pretrain, "pretrain-pytorchjob": pretrain_pytorchjob}
# The exit task: runs after the stages whatever their outcome; a failed run's MLflow run ends FAILED.
EXIT_TASK = finalize
