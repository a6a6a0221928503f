"""Where the pipeline's stages read and write: the one place that names the stage-output paths.

``dvc.yaml`` runs ``aepipe <stage>`` with exactly :func:`command` (tests/test_dvc_deps.py checks
the ``cmd``, ``outs``, ``metrics`` and ``plots`` of every stage against this module); the CLI takes
its flags and defaults from :data:`STAGE_ARGS`, the PyTorchJob its pretrain arguments, the KFP
register component the metric file names. No torch, no MLflow: everything may import it.
"""

from __future__ import annotations

# The stages in the order a pipeline execution runs them; the last one closes the execution.
STAGES = ("prepare", "pretrain", "extract", "train", "evaluate", "register")

DATA = "data/prepared"
AUTOENCODER = "models/autoencoder"
FEATURES = "features"
CLASSIFIER = "models/classifier"
METRICS = "metrics"
PLOTS = "plots"
REGISTRATION = "reports/registration.json"

# The metrics file of each stage that writes one, inside METRICS (register reads them all).
METRIC_FILES: dict[str, str] = {"pretrain": "pretrain.json", "train": "train.json", "evaluate": "eval.json"}

# Files each stage writes into its plots directory (shared by several stages).
PLOT_FILES: dict[str, tuple[str, ...]] = {
    "pretrain": ("pretrain_loss.csv", "pretrain_loss.png"),
    "train": ("train_curve.csv",),
    "evaluate": (
        "confusion.csv",
        "confusion.png",
        "reconstructions.png",
        "latent_projection.png",
        "misclassified.png",
    ),
}


def metrics_file(stage: str) -> str:
    return f"{METRICS}/{METRIC_FILES[stage]}"


# Per stage: CLI flag -> (keyword of the stage's run() function, default path), in dvc.yaml's order.
STAGE_ARGS: dict[str, dict[str, tuple[str, str]]] = {
    "prepare": {"out": ("out_dir", DATA)},
    "pretrain": {
        "data": ("data_dir", DATA),
        "model": ("model_dir", AUTOENCODER),
        "metrics": ("metrics_path", metrics_file("pretrain")),
        "plots": ("plots_dir", PLOTS),
    },
    "extract": {
        "data": ("data_dir", DATA),
        "model": ("model_dir", AUTOENCODER),
        "out": ("features_dir", FEATURES),
    },
    "train": {
        "data": ("data_dir", DATA),
        "features": ("features_dir", FEATURES),
        "model": ("model_dir", AUTOENCODER),
        "out": ("classifier_dir", CLASSIFIER),
        "metrics": ("metrics_path", metrics_file("train")),
        "plots": ("plots_dir", PLOTS),
    },
    "evaluate": {
        "data": ("data_dir", DATA),
        "model": ("model_dir", AUTOENCODER),
        "classifier": ("classifier_dir", CLASSIFIER),
        "metrics": ("metrics_path", metrics_file("evaluate")),
        "plots": ("plots_dir", PLOTS),
    },
    "register": {
        "data": ("data_dir", DATA),
        "model": ("model_dir", AUTOENCODER),
        "classifier": ("classifier_dir", CLASSIFIER),
        "metrics_dir": ("metrics_dir", METRICS),
        "plots": ("plots_dir", PLOTS),
        "out": ("out_path", REGISTRATION),
    },
}


def cli_args(stage: str) -> list[str]:
    """The default path flags of ``aepipe <stage>``: ``["--data", "data/prepared", ...]``."""
    return [
        part
        for flag, (_, default) in STAGE_ARGS[stage].items()
        for part in (f"--{flag.replace('_', '-')}", default)
    ]


def command(stage: str) -> str:
    """The command line dvc.yaml runs for ``stage``."""
    return " ".join(["aepipe", stage, *cli_args(stage)])


def default_paths(stage: str) -> dict[str, str]:
    """The stage's run() path keywords with their default values."""
    return dict(STAGE_ARGS[stage].values())
