"""The semisup head: FixMatch-style consistency training of the encoder and a linear head on the
labelled subset plus every training image, labelled or not.

Each step draws ``batch_size`` labelled images and ``unlabelled_ratio`` x as many images from the
whole training split (their labels unused). The unlabelled images are read once under a weak
augmentation (a small shift) without gradients; where the softmax confidence reaches
``threshold``, its argmax becomes a pseudo-label that the model must predict on a strongly
augmented view of the same image (affine, contrast, cutout: ``aepipe.training.augment``). The
loss is cross-entropy on the labelled images plus ``unlabelled_weight`` x the masked
cross-entropy on the strong views (averaged over all unlabelled images, as in FixMatch).

Two options act on the weak-view probabilities before the threshold: ``distribution_alignment``
(ReMixMatch; on by default) rescales them by the labelled subset's class frequencies over a
running mean of the predicted ones (``ClassBalance``), and ``class_thresholds`` (FlexMatch; off)
lowers the threshold of the classes the model has confidently predicted least (``Curriculum``).
Both keep their state in buffers checkpointed with the models.

Start: the pretrained autoencoder's encoder and, by default, the linear probe fitted on the
labelled features (so the first pseudo-labels are as good as the probe). A teacher holds an
exponential moving average of the student's weights (``ema_decay`` per step); it is what is
validated each epoch, early-stopped on the validation split and saved, encoder included, like
the finetune head's (``FitResult.autoencoder``). Learning rates follow a cosine decay over
``max_epochs`` x ``steps_per_epoch`` steps, the encoder at ``encoder_lr_ratio`` x the head's.

Every epoch (``steps_per_epoch`` steps) is checkpointed with both models, the optimizer, the
early-stopping state and every RNG, so a killed run resumes to the same weights on CPU.

The curve also reports, per epoch, the share of unlabelled images above the threshold, how many
of those pseudo-labels were right and the mean confidence of the wrong ones. These diagnostics
compare pseudo-labels to the training split's true labels; they are never used for training or
model selection.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aepipe.data.prepared import load_prepared
from aepipe.models.heads import LinearClassifier
from aepipe.models.io import load_autoencoder
from aepipe.models.pair import EncoderClassifier
from aepipe.training import augment
from aepipe.training.device import autocast, configure_backends
from aepipe.training.features import as_tensor
from aepipe.training.fit import FitResult, HeadData
from aepipe.training.loop import TRAIN_ACCURACY_SAMPLE, accuracy, fit_epochs, sgd_step


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay x teacher + (1 - decay) x student for parameters; buffers (BatchNorm
    statistics, counters) are copied, since the student's running statistics are already
    averages."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s, 1.0 - decay)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


def confident(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pseudo-labels, their confidences, mask of those at or above ``threshold``)."""
    conf, pseudo = probs.max(dim=1)
    return pseudo, conf, conf >= threshold


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the masked rows, summed and divided by ALL rows (FixMatch's normalisation:
    the loss grows as more pseudo-labels pass the threshold)."""
    per_row = F.cross_entropy(logits.float(), targets, reduction="none")
    return (per_row * mask.float()).sum() / max(len(mask), 1)


class ClassBalance(nn.Module):
    """Distribution alignment (ReMixMatch): a running mean of the class probabilities the
    pseudo-label reader gives unlabelled weak views, kept as a buffer so it is checkpointed and
    early-stopped with the models; ``align`` rescales a batch's probabilities by target / that
    mean, so a class predicted less often than the labelled subset's frequency gains confidence
    and one predicted more often loses it."""

    running: torch.Tensor
    target: torch.Tensor

    def __init__(self, target: torch.Tensor, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("target", target.float() / target.sum())
        self.register_buffer("running", self.target.clone())

    @torch.no_grad()
    def align(self, probs: torch.Tensor) -> torch.Tensor:
        self.running.lerp_(probs.mean(dim=0), 1.0 - self.momentum)
        scaled = probs * (self.target / self.running.clamp_min(1e-6))
        return scaled / scaled.sum(dim=1, keepdim=True)


class Curriculum(nn.Module):
    """FlexMatch's curriculum pseudo-labelling: per-class thresholds from how well each class is
    learnt. ``predicted`` holds, per unlabelled image, the last class it was predicted as with
    confidence above the fixed threshold (-1: never), a buffer checkpointed with the models.
    beta_c = (images whose ``predicted`` is c) / max(largest such count, images still at -1) (the
    threshold warm-up: while most images are unpredicted every beta is small), and class c's
    threshold is threshold x beta_c / (2 - beta_c): low for a class the model has learnt less,
    the fixed threshold for the best-learnt one once most images are predicted."""

    predicted: torch.Tensor

    def __init__(self, n_unlabelled: int, n_classes: int, threshold: float) -> None:
        super().__init__()
        self.n_classes, self.threshold = n_classes, threshold
        self.register_buffer("predicted", torch.full((n_unlabelled,), -1, dtype=torch.long))

    def thresholds(self) -> torch.Tensor:
        seen = self.predicted >= 0
        counts = torch.bincount(self.predicted[seen], minlength=self.n_classes).float()
        beta = counts / torch.maximum(counts.max(), (~seen).sum().float()).clamp_min(1.0)
        return self.threshold * beta / (2.0 - beta)

    @torch.no_grad()
    def mask(self, index: torch.Tensor, pseudo: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """The images of this batch whose confidence reaches their pseudo-label's threshold;
        then records the ones above the fixed threshold."""
        keep = conf >= self.thresholds()[pseudo]
        over = conf >= self.threshold
        self.predicted[index[over]] = pseudo[over]
        return keep


def cosine(step: int, total: int) -> float:
    """Learning-rate factor at ``step`` of ``total``: 1 -> 0 along half a cosine (stateless)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def initial_head(data: HeadData) -> tuple[LinearClassifier, float | None]:
    """The head to start from, and the probe's validation accuracy when it is the probe."""
    if data.cfg.semisup.init_head == "probe":
        from aepipe.training.heads import fit_linear

        probe = fit_linear(data)
        assert isinstance(probe.module, LinearClassifier)
        return probe.module, probe.val_accuracy
    head = LinearClassifier(data.f_train.shape[1], data.n_classes)
    head.set_stats(data.f_train)
    return head, None


def fit_semisup(data: HeadData) -> FitResult:
    opts, device = data.cfg.semisup, data.device
    if data.data_dir is None or data.model_dir is None or data.picked is None:
        raise ValueError(
            "the semisup head needs data_dir, model_dir and picked (the train stage passes them)"
        )
    configure_backends(device)
    generator = torch.Generator().manual_seed(data.seed)
    ds = load_prepared(data.data_dir, mmap=True)
    x_split, y_split = ds.split("train")
    x_all = as_tensor(x_split, device)  # the unlabelled pool: every training image
    y_all = torch.from_numpy(np.asarray(y_split, dtype=np.int64)).to(device)  # diagnostics only
    labelled = torch.from_numpy(np.asarray(data.picked, dtype=np.int64)).to(device)
    y_lab = torch.from_numpy(np.asarray(data.y_train, dtype=np.int64)).to(device)
    xv = as_tensor(ds.split("val")[0], device)
    yv = torch.from_numpy(np.asarray(data.y_val, dtype=np.int64)).to(device)

    start_head, probe_val = initial_head(data)  # before the autoencoder is loaded: fit_linear is CPU work
    autoencoder = load_autoencoder(data.model_dir, device)
    student = EncoderClassifier(autoencoder, start_head.to(device))
    teacher = copy.deepcopy(student).requires_grad_(False)
    balance = ClassBalance(torch.bincount(y_lab, minlength=data.n_classes), opts.alignment_momentum)
    curriculum = Curriculum(len(x_all), data.n_classes, opts.threshold)
    models = nn.ModuleDict(
        {"student": student, "teacher": teacher, "balance": balance, "curriculum": curriculum}
    ).to(device)  # checkpointed and early-stopped together
    opt = torch.optim.AdamW(
        [
            {"params": autoencoder.parameters(), "lr": opts.lr * opts.encoder_lr_ratio},
            {"params": student.head.parameters(), "lr": opts.lr},
        ],
        weight_decay=opts.weight_decay,
    )
    base_lrs = [group["lr"] for group in opt.param_groups]
    total_steps = opts.max_epochs * opts.steps_per_epoch
    n_lab, n_unl = opts.batch_size, opts.batch_size * opts.unlabelled_ratio
    reader = teacher if opts.pseudo_labels == "teacher" else student
    sample = labelled[torch.randperm(len(labelled), generator=generator)[:TRAIN_ACCURACY_SAMPLE].to(device)]
    stats: dict[str, torch.Tensor] = {}
    started = time.perf_counter()

    def unit(x_u8: torch.Tensor) -> torch.Tensor:
        return x_u8.float().div_(255.0)

    def teacher_logits(x_u8: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            out: torch.Tensor = teacher(unit(x_u8))
            return out.float()

    def train_epoch(epoch: int) -> torch.Tensor:
        teacher.eval()
        # this epoch's labelled batches: seeded permutations of the subset, end to end
        reps = math.ceil(opts.steps_per_epoch * n_lab / len(labelled))
        order = torch.cat([torch.randperm(len(labelled), generator=generator) for _ in range(reps)])
        totals = torch.zeros(
            6, device=device
        )  # loss, labelled loss, unlabelled loss, masked, right, conf of wrong
        for step in range(opts.steps_per_epoch):
            decay = cosine((epoch - 1) * opts.steps_per_epoch + step, total_steps)
            for group, lr in zip(opt.param_groups, base_lrs, strict=True):
                group["lr"] = lr * decay
            li = order[step * n_lab : (step + 1) * n_lab].to(device)
            ui = torch.randint(len(x_all), (n_unl,), generator=generator).to(device)
            x_lab = augment.weak(unit(x_all[labelled[li]]), opts.augment, generator)
            x_unl = unit(x_all[ui])
            with torch.no_grad():
                reader.eval()
                with autocast(device):
                    probs = torch.softmax(reader(augment.weak(x_unl, opts.augment, generator)).float(), dim=1)
                if opts.distribution_alignment:
                    probs = balance.align(probs)
                pseudo, conf, mask = confident(probs, opts.threshold)
                if opts.class_thresholds:
                    mask = curriculum.mask(ui, pseudo, conf)
            student.train()
            x_strong = augment.strong(x_unl, opts.augment, generator)
            with autocast(device):
                logits = student(torch.cat([x_lab, x_strong])).float()
            loss_lab = F.cross_entropy(logits[:n_lab], y_lab[li])
            loss_unl = masked_cross_entropy(logits[n_lab:], pseudo, mask)
            loss = sgd_step(opt, loss_lab + opts.unlabelled_weight * loss_unl)
            ema_update(teacher, student, opts.ema_decay)
            wrong = mask & (pseudo != y_all[ui])
            totals += torch.stack(
                [
                    loss,
                    loss_lab.detach(),
                    loss_unl.detach(),
                    mask.sum().float(),
                    (mask & ~wrong).sum().float(),
                    (conf * wrong).sum(),
                ]
            )
        stats["totals"] = totals
        return totals[0]

    def evaluate(epoch: int) -> dict[str, float]:
        teacher.eval()
        loss, loss_lab, loss_unl, masked, right, conf_wrong = stats.pop("totals").tolist()
        steps, unlabelled = opts.steps_per_epoch, opts.steps_per_epoch * n_unl
        return {
            "step": epoch,
            "train_accuracy": accuracy(teacher_logits, x_all[sample], y_all[sample]),
            "val_accuracy": accuracy(teacher_logits, xv, yv),
            "loss": loss / steps,
            "labelled_loss": loss_lab / steps,
            "unlabelled_loss": loss_unl / steps,
            "mask_rate": masked / unlabelled,
            "pseudo_label_accuracy": right / masked if masked else float("nan"),
            "wrong_pseudo_label_confidence": conf_wrong / (masked - right)
            if masked > right
            else float("nan"),
        }

    stopper, curve = fit_epochs(
        models,
        opt,
        generator,
        opts.max_epochs,
        opts.patience,
        data.checkpoint,
        train_epoch,
        evaluate,
        "semi-supervised training",
        "lower classifier.semisup.lr",
    )
    info = {
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(curve),
        "steps_run": len(curve) * opts.steps_per_epoch,
        "encoder_lr": base_lrs[0],
        "probe_val_accuracy": probe_val,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return FitResult(
        teacher.head.eval(), stopper.best, curve, info=info, autoencoder=teacher.autoencoder.eval()
    )
