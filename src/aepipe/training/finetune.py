"""The finetune head: a linear head on the encoder's features, then the encoder unfrozen.

LP-FT style: ``head_epochs`` first train the head alone on the frozen encoder (eval mode), so
the randomly initialised head does not wreck the pretrained features with large early
gradients; then everything trains, the encoder at ``encoder_lr_ratio`` x the head's learning
rate. Both learning rates follow a cosine decay over ``max_epochs`` (large steps early, small
ones to settle), and early stopping keeps the epoch with the best validation accuracy. The fine-tuned
autoencoder is returned with the head and saved beside it (see ``aepipe.models.io``), so
``evaluate`` and the registered model use exactly the trained pair. Every epoch is checkpointed
(``HeadData.checkpoint``), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from aepipe.data.prepared import load_prepared
from aepipe.models.heads import LinearClassifier
from aepipe.models.io import load_autoencoder
from aepipe.models.pair import EncoderClassifier
from aepipe.training.features import as_tensor
from aepipe.training.fit import FitResult, HeadData
from aepipe.training.loop import TRAIN_ACCURACY_SAMPLE, accuracy, epoch_batches, fit_epochs, sgd_step


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own integer offset in [-max_shift, max_shift] per axis, zero fill."""
    if max_shift == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def fit_finetune(data: HeadData) -> FitResult:
    opts, device = data.cfg.finetune, data.device
    if data.data_dir is None or data.model_dir is None or data.picked is None:
        raise ValueError(
            "the finetune head needs data_dir, model_dir and picked (the train stage passes them)"
        )
    generator = torch.Generator().manual_seed(data.seed)
    ds = load_prepared(data.data_dir, mmap=True)
    xt = as_tensor(ds.split("train")[0][data.picked], device)
    xv = as_tensor(ds.split("val")[0], device)
    yt, yv = (torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device) for y in (data.y_train, data.y_val))

    autoencoder = load_autoencoder(data.model_dir, device)
    head = LinearClassifier(data.f_train.shape[1], data.n_classes)
    head.set_stats(data.f_train)
    pair = EncoderClassifier(autoencoder, head.to(device))
    opt = torch.optim.AdamW(
        [
            {"params": autoencoder.parameters(), "lr": opts.lr * opts.encoder_lr_ratio},
            {"params": head.parameters(), "lr": opts.lr},
        ],
        weight_decay=opts.weight_decay,
    )
    base_lrs = [group["lr"] for group in opt.param_groups]
    sample = torch.randperm(len(xt), generator=generator)[:TRAIN_ACCURACY_SAMPLE].to(device)

    def logits(x_u8: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = pair(x_u8.float().div_(255.0))
        return out

    def train_epoch(epoch: int) -> torch.Tensor:
        frozen = epoch <= opts.head_epochs
        pair.train()
        autoencoder.train(not frozen)  # frozen: BatchNorm keeps its pretrained statistics
        decay = 0.5 * (1 + math.cos(math.pi * (epoch - 1) / opts.max_epochs))  # stateless: resume-safe
        for group, lr in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = lr * decay
        if frozen:
            opt.param_groups[0]["lr"] = 0.0
        total = torch.zeros((), device=device)
        for idx in epoch_batches(len(xt), opts.batch_size, opts.min_steps_per_epoch, generator):
            idx = idx.to(device)
            xb = xt[idx].float().div_(255.0)
            if opts.augment:
                xb = random_shift(xb, opts.max_shift, generator)
            total += sgd_step(opt, F.cross_entropy(pair(xb), yt[idx]))
        return total

    def evaluate(epoch: int) -> dict[str, float]:
        pair.eval()
        row = {
            "step": epoch,
            "train_accuracy": accuracy(logits, xt[sample], yt[sample]),
            "val_accuracy": accuracy(logits, xv, yv),
        }
        return row | {"encoder_trained": int(epoch > opts.head_epochs)}

    stopper, curve = fit_epochs(
        pair,
        opt,
        generator,
        opts.max_epochs,
        opts.patience,
        data.checkpoint,
        train_epoch,
        evaluate,
        "fine-tuning",
        "lower classifier.finetune.lr",
    )
    info = {
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(curve),
        "encoder_lr": base_lrs[0],
        "augment": opts.augment,
    }
    return FitResult(head.eval(), stopper.best, curve, info=info, autoencoder=autoencoder.eval())
