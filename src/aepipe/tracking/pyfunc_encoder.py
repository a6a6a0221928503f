"""MLflow models-from-code entry: the encoder alone, for training new heads on a promoted encoder.

Input: uint8 images N×C×H×W. Output: the feature matrix heads consume (N × feature_dim).
Weights are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import warnings

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class EncoderModel(PythonModel):
    def load_context(self, context):  # MLflow inspects type hints; keep none
        import torch

        from aepipe.models.io import load_autoencoder

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.autoencoder = load_autoencoder(context.artifacts["autoencoder"], self.device)

    def predict(self, context, model_input, params=None):  # untyped on purpose: see the end
        import torch

        from aepipe.models.pair import to_unit_float

        x = to_unit_float(np.asarray(model_input), self.autoencoder.spec.input_shape)
        with torch.inference_mode():
            return self.autoencoder.features(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


# predict() has no type hints on purpose (the signature is the contract); silence MLflow's nudge.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)
mlflow.models.set_model(EncoderModel())
