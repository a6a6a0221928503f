"""MLflow models-from-code entry: the encoder alone, for training new heads on a promoted encoder.

Input: uint8 images N×C×H×W. Output: the feature matrix heads consume (N × feature_dim).
Weights are read with ``torch.load(weights_only=True)``. ``predict`` is typed (``np.ndarray``
in and out); the logged signature (a uint8 TensorSpec) is the contract MLflow enforces on input.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class EncoderModel(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        import torch

        from aepipe.models.io import load_autoencoder

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.autoencoder = load_autoencoder(context.artifacts["autoencoder"], self.device)

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        import torch

        from aepipe.models.pair import to_unit_float

        x = to_unit_float(np.asarray(model_input), self.autoencoder.spec.input_shape)
        with torch.inference_mode():
            return self.autoencoder.features(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


mlflow.models.set_model(EncoderModel())
