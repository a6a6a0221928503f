"""MLflow models-from-code entry: the encoder + classifier pair as one pyfunc model.

MLflow runs this file when loading the model; weights come from the logged artifacts as
state_dicts read with ``torch.load(weights_only=True)`` — nothing is unpickled.

Input: uint8 images N×C×H×W (0-255), the signature's contract. Output: one row per image with
``class`` (name), ``class_index`` and ``probabilities`` (one per class, in class order).
``predict`` is typed (``np.ndarray`` in, ``pd.DataFrame`` out); MLflow infers no schema from an
ndarray hint, so the logged signature (a uint8 TensorSpec) is the contract it enforces on input.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class EncoderClassifierModel(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        import torch

        from aepipe.models.io import load_pair

        device = "cuda" if torch.cuda.is_available() else "cpu"
        # The same loader as `evaluate`: a fine-tuned encoder inside the classifier dir wins.
        self.pair, spec = load_pair(context.artifacts["autoencoder"], context.artifacts["classifier"], device)
        self.classes = [str(c) for c in spec["classes"]]

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        proba = self.pair.predict_proba(np.asarray(model_input))
        index = proba.argmax(1)
        return pd.DataFrame(
            {
                "class": [self.classes[i] for i in index],
                "class_index": index.astype(np.int64),
                "probabilities": [row.astype(np.float64).tolist() for row in proba],
            }
        )


mlflow.models.set_model(EncoderClassifierModel())
