"""Encoder + classifier as one module: what `evaluate` scores and what MLflow serves.

Keeping a single forward path for both guarantees the registered model reproduces the
evaluate stage's test accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aepipe.models.base import AutoEncoder


class EncoderClassifier(nn.Module):
    def __init__(self, autoencoder: AutoEncoder, head: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1], shape (N, C, H, W)."""
        logits: torch.Tensor = self.head(self.autoencoder.features(x))
        return logits

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities for uint8 (0-255) or float ([0, 1]) images, N×H×W or N×C×H×W."""
        self.eval()
        device = next(self.parameters()).device
        x = to_unit_float(images, self.autoencoder.spec.input_shape)
        out = []
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start : start + batch_size]).to(device)
            out.append(torch.softmax(self(xb).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def to_unit_float(images: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Check shape and range and return float32 (N, C, H, W) in [0, 1]."""
    from aepipe.errors import DataError

    x = np.asarray(images)
    c, h, w = input_shape
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise DataError(
            f"images have shape {tuple(x.shape)}; the model expects N×{c}×{h}×{w}"
            + (f" or N×{h}×{w}" if c == 1 else "")
        )
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"images have dtype {x.dtype}; pass uint8 in 0-255 or float in [0, 1]")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError("images contain NaN or inf; pass finite values (uint8 0-255 or float in [0, 1])")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"float images must lie in [0, 1] (got {x.min():.3g}..{x.max():.3g}); divide 0-255 images by 255 "
            "or pass uint8"
        )
    return x
