"""Head name -> the function that trains that head (``classifier.head``; see aepipe.models.heads).

Plain imports, no registry of dotted names: the train stage's import closure (and so its
dvc.yaml deps) is what Python and tests/import_closure.py see.
"""

from __future__ import annotations

from collections.abc import Callable

from aepipe.training.finetune import fit_finetune
from aepipe.training.fit import FitResult, HeadData
from aepipe.training.heads import fit_linear, fit_mlp
from aepipe.training.semisup import fit_semisup

TRAINERS: dict[str, Callable[[HeadData], FitResult]] = {
    "linear": fit_linear,
    "mlp": fit_mlp,
    "finetune": fit_finetune,
    "semisup": fit_semisup,
}
