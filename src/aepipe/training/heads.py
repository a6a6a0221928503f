"""Trainers for classifier heads. Each returns (module, info); selection uses validation only."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from aepipe.config import ClassifierConfig
from aepipe.models.heads import LinearClassifier


def fit_linear(
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    cfg: ClassifierConfig,
    seed: int,
    **_: Any,
) -> tuple[LinearClassifier, dict[str, Any]]:
    """Linear probe: multinomial logistic regression on standardised frozen features.

    scikit-learn's L-BFGS solver fits it; the weights are copied into a torch module so the
    registered model is a plain state_dict. C is chosen on the validation split.
    """
    scaler = StandardScaler().fit(f_train)
    scale = np.where(scaler.scale_ < 1e-8, 1.0, scaler.scale_)
    zt, zv = (f_train - scaler.mean_) / scale, (f_val - scaler.mean_) / scale
    curve, best = [], None
    for c in cfg.linear.c_grid:
        clf = LogisticRegression(C=c, max_iter=cfg.linear.max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(zt, y_train)
        val_acc = float((clf.predict(zv) == y_val).mean())
        train_acc = float((clf.predict(zt) == y_train).mean())
        curve.append({"step": len(curve), "C": c, "train_accuracy": train_acc, "val_accuracy": val_acc})
        if best is None or val_acc > best[0]:
            best = (val_acc, c, clf)
    assert best is not None
    val_acc, c, clf = best

    module = LinearClassifier(f_train.shape[1], n_classes)
    weight = np.zeros((n_classes, f_train.shape[1]))
    bias = np.full(n_classes, -1e4)  # classes absent from the labelled subset are never predicted
    weight[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_]) / 2
    bias[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
    with torch.no_grad():
        module.feat_mean.copy_(torch.from_numpy(scaler.mean_).float())
        module.feat_scale.copy_(torch.from_numpy(scale).float())
        module.linear.weight.copy_(torch.from_numpy(weight).float())
        module.linear.bias.copy_(torch.from_numpy(bias).float())
    return module, {"val_accuracy": val_acc, "C": c, "curve": curve}
