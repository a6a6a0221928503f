"""The pipeline stages, each a plain function: ``run(params, <input paths>, <output paths>, tracker)``.

The CLI that ``dvc.yaml`` calls and the Kubeflow components are both thin wrappers over these.
"""

from aepipe.paths import STAGES

__all__ = ["STAGES"]
