"""Typed params: one pydantic model per ``params.yaml`` section, validated once.

``params.yaml`` is the single source of truth. Every wrapper (CLI for ``dvc repro``, KFP
components, benchmarks) calls :func:`load_params` and hands the resulting :class:`Params` to the
stage functions, so a wrong key, type or value fails before any stage writes anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aepipe.errors import ConfigError
from aepipe.options import HEAD_NAMES, VARIANT_OPTIONS
from aepipe.paths import STAGES

TORCHVISION_SETS = ("mnist", "fashion_mnist", "cifar10")
SOURCE_HELP = "digits | npz:<path> | folder:<path> | npy:<dir> | torchvision:<mnist|fashion_mnist|cifar10>"


class Section(BaseModel):
    """Strict: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataConfig(Section):
    source: str = Field("digits", description=SOURCE_HELP)
    val_fraction: float = Field(
        0.1, gt=0.0, lt=0.5, description="share of the training pool held out for validation"
    )
    test_fraction: float = Field(
        0.2, gt=0.0, lt=0.5, description="share carved out as test split when the source has none"
    )
    seed: int = Field(0, ge=0, description="seed of the stratified splits")
    image_size: tuple[int, int] | None = Field(None, description="[height, width] to resize folder images to")
    channels: Literal[1, 3] | None = Field(
        None, description="force grayscale (1) or RGB (3) for folder images"
    )
    alpha: Literal["white", "black", "refuse"] = Field(
        "white",
        description="folder images with transparency: composited over a white or black background, "
        "or refused",
    )
    cache_dir: str = Field("data/raw", description="where torchvision downloads go")

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if value == "digits":
            return value
        kind, sep, arg = value.partition(":")
        if not sep or kind not in ("npz", "npy", "folder", "torchvision") or not arg:
            raise ValueError(f"unknown source {value!r}; allowed: {SOURCE_HELP}")
        if kind == "torchvision" and arg not in TORCHVISION_SETS:
            raise ValueError(f"unknown torchvision dataset {arg!r}; allowed: {', '.join(TORCHVISION_SETS)}")
        return value

    @field_validator("image_size")
    @classmethod
    def _check_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (min(value) < 4 or max(value) > 1024):
            raise ValueError("image_size must be [height, width] with each side between 4 and 1024")
        return value


class ModelConfig(BaseModel):
    """Shared backbone settings plus one optional section per variant (``model.<name>: {...}``).

    Variant sections are validated by the variant's own config class from the model registry,
    so adding a variant never touches this file.
    """

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    name: str = Field("vae_joint", description="autoencoder variant (see aepipe.options.VARIANT_OPTIONS)")
    latent_dim: int = Field(64, ge=1, le=4096)
    width: int = Field(16, ge=1, le=1024, description="channels of the first backbone stage")
    depth: int = Field(2, ge=1, le=6, description="number of downsampling stages")
    features: Literal["latent", "multiscale"] = Field(
        "multiscale",
        description="what heads see: the code alone, or every stage's pooled activations plus the code",
    )
    pool_grid: int = Field(
        4, ge=1, le=8, description="multiscale: average-pool each stage to a grid of this side (1 = global)"
    )

    @model_validator(mode="after")
    def _check_variants(self) -> ModelConfig:
        allowed = ", ".join(sorted(VARIANT_OPTIONS))
        if self.name not in VARIANT_OPTIONS:
            raise ValueError(f"unknown model.name {self.name!r}; allowed: {allowed}")
        for key, value in (self.model_extra or {}).items():
            if key not in VARIANT_OPTIONS:
                raise ValueError(
                    f"unknown key model.{key}; allowed: name, latent_dim, width, depth, features, pool_grid, "
                    f"or a variant section ({allowed})"
                )
            try:
                VARIANT_OPTIONS[key].model_validate(value if value is not None else {})
            except ValidationError as exc:
                raise ValueError(f"in model.{key}: {_describe(exc, prefix=f'model.{key}')}") from None
        return self

    def options(self, name: str | None = None) -> BaseModel:
        """The typed options of a variant (defaults when its section is absent)."""
        name = name or self.name
        raw = (self.model_extra or {}).get(name) or {}
        return VARIANT_OPTIONS[name].model_validate(raw)


class PretrainConfig(Section):
    epochs: int = Field(
        30, ge=0, le=10_000, description="0 only with init_from: use the registered encoder as is"
    )
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0, description="max gradient norm; null = no clipping")
    init_from: str | None = Field(
        None, description="start from a registered encoder, e.g. models:/aepipe-digits-encoder@champion"
    )
    data_mode: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: the splits resident on the device; stream: blocks read from x.npy; auto: memory "
        "when they fit in half the free memory",
    )
    stream_buffer_mb: int = Field(
        256,
        ge=8,
        le=65_536,
        description="stream: shuffle buffer (whole blocks, shuffled within); "
        "larger = closer to a full shuffle",
    )
    sync_every: int = Field(
        50, ge=1, description="steps between reads of the loss on the host (divergence check window)"
    )
    channels_last: Literal["auto"] | bool = Field(
        "auto",
        description="NHWC memory format; auto = the device type's measured choice (on for CUDA and CPU); "
        "false reproduces a plain NCHW loop bit for bit",
    )
    compile: Literal["auto"] | bool = Field(
        "auto",
        description="torch.compile the model (the first steps pay the compilation); auto = when the run "
        "has enough steps to pay for it on this device type (no device type has a reliable break-even "
        'yet, so auto does not compile; README "Fast paths")',
    )
    threads: Literal["auto"] | int = Field(
        "auto",
        description="torch CPU threads while pretraining; auto = the process's count (torch's default or "
        "OMP_NUM_THREADS), capped at the CPUs it may use (affinity, cgroup quota); results depend on it",
    )

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: str | int) -> str | int:
        if value != "auto" and not 1 <= int(value) <= 1024:
            raise ValueError("threads must be auto or an integer from 1 to 1024")
        return value

    @model_validator(mode="after")
    def _epochs_need_a_start(self) -> PretrainConfig:
        if self.epochs == 0 and not self.init_from:
            raise ValueError(
                "epochs: 0 needs pretrain.init_from (a registered encoder to use as is); "
                "otherwise set epochs >= 1"
            )
        if self.init_from and not self.init_from.startswith(("models:/", "runs:/")):
            raise ValueError(f"init_from must be a models:/ or runs:/ URI (got {self.init_from!r})")
        return self


class LinearHeadConfig(Section):
    c_grid: list[float] = Field(
        [0.01, 0.1, 1.0, 10.0],
        min_length=1,
        description="inverse L2 strengths tried; best on validation wins",
    )
    max_iter: int = Field(2000, ge=10)

    @field_validator("c_grid")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(c <= 0 for c in value):
            raise ValueError("every C in c_grid must be > 0")
        return value


class LoopConfig(Section):
    """Minibatch training with early stopping on validation accuracy (mlp and finetune heads)."""

    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW decoupled weight decay")
    batch_size: int = Field(128, ge=1, le=65_536)
    max_epochs: int = Field(50, ge=1, le=10_000)
    patience: int = Field(
        5, ge=1, description="stop after this many epochs without a better validation accuracy"
    )
    min_steps_per_epoch: int = Field(
        20, ge=1, description="an epoch of a tiny labelled subset repeats it up to this many batches"
    )


class MlpHeadConfig(LoopConfig):
    hidden: list[int] = Field([256], min_length=1, description="units of each hidden layer")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    batch_size: int = Field(256, ge=1, le=65_536)
    max_epochs: int = Field(50, ge=1, le=10_000)

    @field_validator("hidden")
    @classmethod
    def _positive_units(cls, value: list[int]) -> list[int]:
        if any(u < 1 for u in value):
            raise ValueError("every hidden layer needs at least 1 unit")
        return value


class FinetuneHeadConfig(LoopConfig):
    lr: float = Field(
        2e-3, gt=0.0, le=10.0, description="the head's peak learning rate (cosine decay over max_epochs)"
    )
    encoder_lr_ratio: float = Field(
        0.5, gt=0.0, le=1.0, description="encoder learning rate = lr x this (the head gets lr)"
    )
    head_epochs: int = Field(
        1, ge=0, description="epochs that train only the head (encoder frozen) before unfreezing it"
    )
    max_epochs: int = Field(20, ge=1, le=10_000)
    augment: bool = Field(False, description="random shifts of the labelled images while fine-tuning")
    max_shift: int = Field(2, ge=0, le=16, description="augment: largest shift in pixels, per axis")


class AugmentConfig(Section):
    """Batch augmentations of the semisup head (aepipe.training.augment). Defaults suit digits and
    silhouettes: no flips (a mirrored 2 is not a 2)."""

    weak_translate: float = Field(
        0.0625, ge=0.0, le=0.5, description="weak view: largest shift, share of the image side (whole pixels)"
    )
    rotate_deg: float = Field(15.0, ge=0.0, le=180.0, description="strong view: largest rotation in degrees")
    scale: float = Field(0.15, ge=0.0, lt=1.0, description="strong view: zoom in [1 - scale, 1 + scale]")
    shear: float = Field(0.2, ge=0.0, le=1.0, description="strong view: largest shear (tangent)")
    translate: float = Field(0.1, ge=0.0, le=0.5, description="strong view: largest shift, share of the side")
    contrast: float = Field(0.5, ge=0.0, le=1.0, description="strong view: contrast factor in [1 - c, 1 + c]")
    cutout: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="strong view: side of the square set to background, share of the side",
    )
    flip: bool = Field(False, description="mirror left-right half the time (both views); wrong for digits")


class SemisupHeadConfig(Section):
    """FixMatch-style training of encoder + linear head on the labelled subset and every training
    image (aepipe.training.semisup)."""

    lr: float = Field(2e-3, gt=0.0, le=10.0, description="the head's peak learning rate (cosine decay)")
    encoder_lr_ratio: float = Field(
        0.5, gt=0.0, le=1.0, description="encoder learning rate = lr x this (the head gets lr)"
    )
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW decoupled weight decay")
    batch_size: int = Field(32, ge=1, le=65_536, description="labelled images per step")
    unlabelled_ratio: int = Field(
        4, ge=1, le=64, description="unlabelled images per step = batch_size x this (FixMatch's mu)"
    )
    steps_per_epoch: int = Field(
        100, ge=1, description="steps between validations/checkpoints (an epoch of this head)"
    )
    max_epochs: int = Field(60, ge=1, le=10_000, description="the cosine schedule spans this many epochs")
    patience: int = Field(
        15, ge=1, description="stop after this many epochs without a better validation accuracy (EMA model)"
    )
    threshold: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="an unlabelled image counts when its weak-view confidence is >= this",
    )
    unlabelled_weight: float = Field(1.0, ge=0.0, description="lambda_u: weight of the pseudo-label loss")
    ema_decay: float = Field(
        0.99, ge=0.0, lt=1.0, description="teacher = decay x teacher + (1 - decay) x student, every step"
    )
    pseudo_labels: Literal["student", "teacher"] = Field(
        "student",
        description="which model reads the weak view: the student (FixMatch) or the EMA teacher",
    )
    distribution_alignment: bool = Field(
        True,
        description="scale the weak-view probabilities by (labelled class frequencies / running mean of "
        "the predicted ones) before thresholding (ReMixMatch's distribution alignment), so a class the "
        "model under-predicts is not absorbed into its neighbours",
    )
    class_thresholds: bool = Field(
        False,
        description="FlexMatch's curriculum: class c's threshold is threshold x M(beta_c), beta_c the share "
        "of unlabelled images confidently predicted as c (relative to the most learnt class, or to the "
        "images not yet confidently predicted while those are more), M(b) = b / (2 - b); classes the model "
        "has learnt less get lower thresholds",
    )
    alignment_momentum: float = Field(
        0.99,
        ge=0.0,
        lt=1.0,
        description="running mean of predicted class probabilities: m x mean + (1 - m) x batch",
    )
    init_head: Literal["probe", "random"] = Field(
        "probe",
        description="start the head from the linear probe on the labelled features (C by validation) "
        "or at random",
    )
    augment: AugmentConfig = AugmentConfig()


class ClassifierConfig(Section):
    head: str = Field(
        "auto",
        description="classifier head (see aepipe.options.HEAD_NAMES), or auto: semisup when "
        "labels_per_class <= auto_semisup_up_to, else linear",
    )
    labels_per_class: int | None = Field(
        None, ge=1, description="labelled training images per class; null = all"
    )
    auto_semisup_up_to: int = Field(
        100, ge=0, description="head auto: labels per class up to which the semisup head is used"
    )
    linear: LinearHeadConfig = LinearHeadConfig()
    mlp: MlpHeadConfig = MlpHeadConfig()
    finetune: FinetuneHeadConfig = FinetuneHeadConfig()
    semisup: SemisupHeadConfig = SemisupHeadConfig()

    @field_validator("head")
    @classmethod
    def _check_head(cls, value: str) -> str:
        if value != "auto" and value not in HEAD_NAMES:
            raise ValueError(
                f"unknown classifier.head {value!r}; allowed: auto, {', '.join(sorted(HEAD_NAMES))}"
            )
        return value

    @property
    def resolved_head(self) -> str:
        """The head that trains: ``head``, or for ``auto`` semisup with few labels (where it beats
        the others, bench/README.md), the linear probe with all of them or many."""
        if self.head != "auto":
            return self.head
        few = self.labels_per_class is not None and self.labels_per_class <= self.auto_semisup_up_to
        return "semisup" if few else "linear"


class EvaluateConfig(Section):
    n_reconstructions: int = Field(
        16, ge=1, le=256, description="test images shown in the reconstruction grid"
    )
    batch_size: int = Field(1024, ge=1)


# The aliases promotion owns (aepipe.tracking.promotion CHAMPION, PREVIOUS; a test keeps them equal):
# mlflow.alias may not be one of them.
PROMOTION_ALIASES = ("champion", "previous-champion")


class MlflowConfig(Section):
    experiment: str = Field("aepipe", min_length=1)
    model_name: str = Field("aepipe-digits", min_length=1)
    alias: str = Field("challenger", min_length=1, description="alias given to a newly registered version")
    selection_metric: Literal["val_accuracy", "val_macro_f1"] = Field(
        "val_accuracy",
        description="validation metric that picks the best pair among the experiment's candidates",
    )
    promotion_metric: Literal["test_accuracy", "test_macro_f1"] = Field(
        "test_accuracy", description="held-out metric the champion gate compares"
    )
    promotion_margin: float = Field(
        0.0, ge=0.0, le=1.0, description="how much better than the champion a challenger must be"
    )
    promotion_alpha: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="the gate's paired exact McNemar test must give p <= alpha (1.0 = margin only)",
    )

    @field_validator("model_name", "alias")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"{value!r} may only hold letters, digits, '.', '_' and '-'")
        return value

    @field_validator("alias")
    @classmethod
    def _not_promotion_alias(cls, value: str) -> str:
        if value.lower() in PROMOTION_ALIASES:
            raise ValueError(
                f"{value!r} is an alias that only `aepipe promote` / `rollback` move (after the gate, with "
                "the audit trail); registering onto it would skip both. Use challenger (the default) "
                "or another name"
            )
        return value


K8S_CPU = r"^([0-9]*[.])?[0-9]+m?$"
K8S_MEMORY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class TaskResources(Section):
    """Kubernetes requests (and limits; null = equal to the request) of one pipeline task."""

    cpu: str = Field("1", pattern=K8S_CPU, description="CPU request, e.g. 2 or 500m")
    memory: str = Field("2Gi", pattern=K8S_MEMORY, description="memory request, e.g. 8Gi")
    cpu_limit: str | None = Field(None, pattern=K8S_CPU)
    memory_limit: str | None = Field(None, pattern=K8S_MEMORY)


class PyTorchJobConfig(Section):
    """Multi-node pretraining as a Kubeflow Training Operator PyTorchJob (``aepipe pipeline pytorchjob``)."""

    name: str = Field(
        "aepipe-pretrain",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=40,
        description="job name (pods are <name>-master-0, <name>-worker-i)",
    )
    namespace: str | None = Field(None, description="Kubernetes namespace; null = kubectl's current one")
    workers: int = Field(
        2, ge=1, le=1024, description="pods (nodes) in all, the first one the Master replica"
    )
    gpus_per_worker: int = Field(
        1, ge=0, le=16, description="GPUs per pod, one torchrun process each; 0 = train on CPU (gloo)"
    )
    procs_per_worker: int = Field(1, ge=1, le=256, description="processes per pod when gpus_per_worker is 0")
    cpu: str = Field("8", pattern=K8S_CPU, description="CPU request = limit per pod")
    memory: str = Field("32Gi", pattern=K8S_MEMORY, description="memory request = limit per pod")
    volume_claim: str = Field(
        "aepipe-workspace",
        min_length=1,
        description="PVC (ReadWriteMany when workers > 1) holding the checkout: params.yaml, data/prepared, "
        "outputs, checkpoints",
    )
    workdir: str = Field(
        "/workspace", pattern=r"^/", description="where the PVC is mounted; the job's working directory"
    )
    port: int = Field(23456, ge=1024, le=65535, description="rendezvous port on the master pod")
    backoff_limit: int = Field(
        3, ge=0, description="pod restarts before the job fails; a restart resumes from the last checkpoint"
    )
    in_pipeline: bool = Field(
        False,
        description="the pipeline's pretrain task submits this PyTorchJob and waits for it, instead of "
        "training in its own pod",
    )
    timeout_hours: float = Field(
        24.0, gt=0, description="in_pipeline: how long the pretrain task waits for the job before failing"
    )
    poll_seconds: float = Field(
        30.0, gt=0, description="in_pipeline: how often the pretrain task reads the job's status"
    )
    launcher: TaskResources = Field(
        TaskResources(cpu="500m", memory="1Gi"),
        description="in_pipeline: requests of the pipeline task that submits the job and waits "
        "(it trains nothing)",
    )
    ttl_seconds_after_finished: int | None = Field(
        86400,
        ge=0,
        description="the operator deletes a finished job and its pods this long after it ends; null = never",
    )
    cleanup: bool = Field(
        True,
        description="in_pipeline: once the outputs are copied back, delete the job and "
        "<workdir>/runs/<run id>",
    )


class KubeflowConfig(Section):
    """Cluster settings of the Kubeflow pipeline; read when compiling, never by a stage (not in dvc.yaml)."""

    image: str | None = Field(
        None, description="component image; null = aepipe:<version>-cuda, the tag `make image` builds"
    )
    secret: str = Field(
        "aepipe-mlflow",
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kubernetes secret turned into env vars",
    )
    secret_env: list[str] = Field(
        ["MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"],
        description="keys of the secret, each exported as the env var of the same name",
    )
    accelerator_type: str = Field(
        "nvidia.com/gpu", min_length=1, description="resource the training tasks request"
    )
    accelerator_limit: int = Field(
        1, ge=0, le=16, description="accelerators per training task; 0 = train on CPU"
    )
    gpu_toleration: str = Field(
        "nvidia.com/gpu",
        min_length=1,
        description="taint key of GPU nodes (tolerated with Exists/NoSchedule)",
    )
    shm_size: str = Field(
        "2Gi", pattern=K8S_MEMORY, description="size of the memory-backed /dev/shm of training tasks"
    )
    run_as_user: int = Field(
        1000, ge=1, description="non-root uid (and gid) the containers run as; the image's user"
    )
    resources: dict[str, TaskResources] = Field(
        default_factory=dict, description="per stage; a stage left out gets the defaults"
    )
    pytorchjob: PyTorchJobConfig = PyTorchJobConfig()
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="retries of a failed task (preempted node, lost pod); register never retries",
    )
    retry_backoff_seconds: int = Field(
        30, ge=0, le=3600, description="wait before the first retry of a task; doubles with each retry"
    )

    @field_validator("secret_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)]
        if bad:
            raise ValueError(f"not valid environment variable names: {', '.join(bad)}")
        return value

    @field_validator("resources")
    @classmethod
    def _known_stages(cls, value: dict[str, TaskResources]) -> dict[str, TaskResources]:
        unknown = sorted(set(value) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
        return value

    def task(self, stage: str) -> TaskResources:
        return self.resources.get(stage) or TaskResources()


class Params(Section):
    seed: int = Field(0, ge=0, description="seed of weight init and training order")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, the form MLflow params and ``dvc exp run -S`` use."""
        return _flatten(self.model_dump(mode="json"))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at the parent of ``loc`` (for 'unknown key' messages)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(exc: ValidationError, prefix: str = "", lines: dict[tuple[str, ...], int] | None = None) -> str:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or "(top level)"
        where = _line_of(lines, _deepest_key(loc, err["msg"]))
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc) if not prefix else []
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            out.append(f"{where}{key}: unknown key{hint} (remove it or fix its spelling)")
        elif err["type"] in ("model_type", "dict_type"):
            given = err.get("input")
            out.append(
                f"{where}{key}: must be a section (a mapping of keys), got {given!r}; "
                "fill it in or delete the line"
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
            out.append(f"{where}{key}: {msg}{shown}")
    return "; ".join(out)


def _deepest_key(loc: tuple[Any, ...], msg: str) -> tuple[Any, ...]:
    """A variant section's errors arrive at ``model`` with the full key in the message
    (``in model.vae: model.vae.beta: ...``): use that key when it is deeper."""
    found = re.findall(r"\bmodel(?:\.\w+)+", msg)
    deeper = max((tuple(k.split(".")) for k in found), key=len, default=())
    return deeper if len(deeper) > len(loc) and deeper[: len(loc)] == loc else loc


def _line_of(lines: dict[tuple[str, ...], int] | None, loc: tuple[Any, ...]) -> str:
    """``"line N: "`` of the deepest key of ``loc`` found in the file, or "" (overrides, dicts)."""
    if not lines:
        return ""
    for depth in range(len(loc), 0, -1):
        line = lines.get(tuple(str(p) for p in loc[:depth]))
        if line is not None:
            return f"line {line}: "
    return ""


def parse_params(
    data: Any, source: str = "params.yaml", lines: dict[tuple[str, ...], int] | None = None
) -> Params:
    """Validate a params mapping; ``lines`` (key path -> line, from :func:`read_yaml`) lets
    every message name the line of the key at fault."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections (data, model, ...), got "
            f"{type(data).__name__}"
        )
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid params: {_describe(exc, lines=lines)}") from None


def override_tree(
    tree: dict[str, Any],
    dotlist: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    flag: str = "-p",
) -> dict[str, Any]:
    """``tree`` (params as plain data) with dotted overrides applied; not yet validated.

    ``dotlist``: ``["pretrain.epochs=50", "classifier.mlp.hidden=[64, 32]", ...]``, parsed by
    OmegaConf's dotlist: each value is typed as YAML (``3`` an int, ``1e-3`` a float, ``null``
    None, ``[1, 2]`` a list, ``{beta: 2}`` a mapping merged into the section); ``${...}`` is kept
    as text, never interpolated. ``values``: dotted key -> an already typed value, applied after.
    ``flag`` names the option in the error for an item without ``=``. Unknown keys are not caught
    here but by the validation after (:func:`apply_overrides`), which names them.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    keys = {}
    for item in dotlist:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} pretrain.epochs=50")
        keys[key.strip()] = item
    keys.update({key: f"{key}={value!r}" for key, value in (values or {}).items()})
    for key, item in keys.items():  # OmegaConf would silently turn the value into a section
        node: Any = tree
        parents = key.split(".")[:-1]
        for i, part in enumerate(parents):
            node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                raise ConfigError(f"{flag} {item!r}: {'.'.join(parents[: i + 1])} is a value, not a section")
    try:
        cfg = OmegaConf.merge(OmegaConf.create(tree), OmegaConf.from_dotlist(list(dotlist)))
        for key, value in (values or {}).items():
            OmegaConf.update(cfg, key, value, merge=True)
        data = OmegaConf.to_container(cfg, resolve=False)
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"{flag} {' '.join(dotlist)}: cannot apply the overrides: {exc}") from None
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def apply_overrides(
    params: Params,
    dotlist: Sequence[str] = (),
    source: str = "params.yaml",
    values: Mapping[str, Any] | None = None,
    flag: str = "-p",
) -> Params:
    """``params`` with dotted ``key=value`` overrides (:func:`override_tree`), validated again:
    an unknown key or a bad value is a :class:`ConfigError` naming it. The one override parser of
    the CLI (``-p``) and the benches (``--set``)."""
    if not dotlist and not values:
        return params
    data = override_tree(params.model_dump(mode="json"), dotlist, values, flag)
    return parse_params(data, f"{source} with {flag} overrides")


def read_yaml(path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse a YAML file strictly: a key given twice in one mapping (``epochs: 3`` then
    ``epochs: 300``, or a section repeated) is an error naming both lines, where plain YAML
    loaders silently keep the last one. Returns the data and the line of every key path."""
    text = path.read_text()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple[str, ...], int] = {}
        if node is not None:
            _index_keys(path, node, (), lines)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(
            f"{path}: {where}not valid YAML: {exc.problem}{context}; fix the syntax there"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return data, lines


def _index_keys(path: Path, node: yaml.Node, at: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            dotted = ".".join((*at, key))
            if key in first:
                raise ConfigError(
                    f"{path}: line {line}: duplicate key {dotted} (first given on line {first[key]}); "
                    "YAML would silently keep only the last one: delete one of them"
                )
            first[key] = line
            lines[(*at, key)] = line
            _index_keys(path, value_node, (*at, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _index_keys(path, item, at, lines)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise :class:`ConfigError` naming the key (and its line)
    at fault. Duplicate keys and an empty file are errors, never silent defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found; run from the repository root or pass --params PATH"
        )
    try:
        data, lines = read_yaml(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    if data is None:
        raise ConfigError(
            f"{path}: the file is empty (or only comments), which would silently mean every default; "
            "write the sections you use, e.g. start from the repository's params.yaml "
            "(`git show HEAD:params.yaml`)"
        )
    return parse_params(data, str(path), lines)
