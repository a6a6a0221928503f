"""Trainers for the heads on frozen features (linear, mlp). Each returns a FitResult; model
selection (C, early stopping) uses the validation split only."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from aepipe.models.heads import LinearClassifier, MLPClassifier
from aepipe.training.fit import FitResult, HeadData
from aepipe.training.loop import TRAIN_ACCURACY_SAMPLE, accuracy, epoch_batches, fit_epochs, sgd_step


def fit_linear(data: HeadData) -> FitResult:
    """Linear probe: multinomial logistic regression on standardised frozen features.

    scikit-learn's L-BFGS solver fits it; the weights are copied into a torch module so the
    registered model is a plain state_dict. C is chosen on the validation split.
    """
    f_train, y_train, y_val, n_classes = data.f_train, data.y_train, data.y_val, data.n_classes
    module = LinearClassifier(f_train.shape[1], n_classes)
    mean, scale = module.set_stats(f_train)
    zt, zv = ((f_train - mean) / scale).astype(np.float32), ((data.f_val - mean) / scale).astype(np.float32)
    curve: list[dict[str, float]] = []
    best = None
    # Weakest regularisation last, each fit warm-started from the previous: far fewer L-BFGS
    # iterations than cold starts on 50k x 1k features.
    clf = LogisticRegression(max_iter=data.cfg.linear.max_iter, random_state=data.seed, warm_start=True)
    for c in sorted(data.cfg.linear.c_grid):
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(zt, y_train)
        val_acc = float((clf.predict(zv) == y_val).mean())
        train_acc = float((clf.predict(zt) == y_train).mean())
        curve.append({"step": len(curve), "C": c, "train_accuracy": train_acc, "val_accuracy": val_acc})
        if best is None or val_acc > best[0]:
            best = (val_acc, c, clf.coef_.copy(), clf.intercept_.copy(), clf.classes_)
    assert best is not None
    val_acc, c, coef, intercept, classes = best

    weight = np.zeros((n_classes, f_train.shape[1]))
    bias = np.full(n_classes, -1e4)  # classes absent from the labelled subset are never predicted
    weight[classes] = coef if len(classes) > 2 else np.vstack([-coef, coef]) / 2
    bias[classes] = intercept if len(classes) > 2 else np.array([-intercept[0], intercept[0]]) / 2
    with torch.no_grad():
        module.linear.weight.copy_(torch.from_numpy(weight).float())
        module.linear.bias.copy_(torch.from_numpy(bias).float())
    return FitResult(module, val_acc, curve, info={"C": c})


def fit_mlp(data: HeadData) -> FitResult:
    """Small MLP on standardised frozen features, AdamW, early stopping on validation accuracy."""
    opts, device = data.cfg.mlp, data.device
    generator = torch.Generator().manual_seed(data.seed)
    module = MLPClassifier(data.f_train.shape[1], data.n_classes, hidden=opts.hidden, dropout=opts.dropout)
    module.set_stats(data.f_train)
    module.to(device)
    ft, fv = (
        torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(device)
        for f in (data.f_train, data.f_val)
    )
    yt, yv = (torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device) for y in (data.y_train, data.y_val))
    opt = torch.optim.AdamW(module.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    sample = torch.randperm(len(ft), generator=generator)[:TRAIN_ACCURACY_SAMPLE].to(device)

    def train_epoch(epoch: int) -> torch.Tensor:
        module.train()
        total = torch.zeros((), device=device)
        for idx in epoch_batches(len(ft), opts.batch_size, opts.min_steps_per_epoch, generator):
            idx = idx.to(device)
            total += sgd_step(opt, F.cross_entropy(module(ft[idx]), yt[idx]))
        return total

    def evaluate(epoch: int) -> dict[str, float]:
        module.eval()
        return {
            "step": epoch,
            "train_accuracy": accuracy(module, ft[sample], yt[sample]),
            "val_accuracy": accuracy(module, fv, yv),
        }

    stopper, curve = fit_epochs(
        module,
        opt,
        generator,
        opts.max_epochs,
        opts.patience,
        data.checkpoint,
        train_epoch,
        evaluate,
        "mlp head training",
        "lower classifier.mlp.lr",
    )
    info = {"best_epoch": stopper.best_epoch, "epochs_run": len(curve)}
    return FitResult(
        module.eval(),
        stopper.best,
        curve,
        info=info,
        options={"hidden": list(opts.hidden), "dropout": opts.dropout},
    )
