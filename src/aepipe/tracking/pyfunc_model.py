"""MLflow models-from-code entry: the encoder + classifier pair as one pyfunc model.

MLflow runs this file when loading the model; weights come from the logged artifacts as
state_dicts read with ``torch.load(weights_only=True)`` — nothing is unpickled.

Input: uint8 images N×C×H×W (0-255), the signature's contract. Output: one row per image with
``class`` (name), ``class_index`` and ``probabilities`` (one per class, in class order).
"""

from __future__ import annotations

import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class EncoderClassifierModel(PythonModel):
    def load_context(self, context):  # MLflow inspects type hints; keep none
        import torch

        from aepipe.models.io import load_pair

        device = "cuda" if torch.cuda.is_available() else "cpu"
        # The same loader as `evaluate`: a fine-tuned encoder inside the classifier dir wins.
        self.pair, spec = load_pair(context.artifacts["autoencoder"], context.artifacts["classifier"], device)
        self.classes = [str(c) for c in spec["classes"]]

    def predict(self, context, model_input, params=None):  # untyped on purpose: see the end
        proba = self.pair.predict_proba(np.asarray(model_input))
        index = proba.argmax(1)
        return pd.DataFrame(
            {
                "class": [self.classes[i] for i in index],
                "class_index": index.astype(np.int64),
                "probabilities": [row.astype(np.float64).tolist() for row in proba],
            }
        )


# predict() has no type hints on purpose (the signature is the contract); silence MLflow's nudge.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)
mlflow.models.set_model(EncoderClassifierModel())
