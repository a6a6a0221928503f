"""``aepipe <stage>``: the commands ``dvc.yaml`` runs, each a thin wrapper over aepipe.stages.

Default paths are the ones dvc.yaml declares. Every command validates params.yaml first, so a
bad key fails before anything is written; user errors print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from aepipe.errors import AepipeError

# CLI flag -> keyword of the stage's run() function, per stage.
STAGE_ARGS: dict[str, dict[str, str]] = {
    "prepare": {"out": "out_dir"},
    "pretrain": {"data": "data_dir", "model": "model_dir", "metrics": "metrics_path", "plots": "plots_dir"},
    "extract": {"data": "data_dir", "model": "model_dir", "out": "features_dir"},
    "train": {"data": "data_dir", "features": "features_dir", "model": "model_dir", "out": "classifier_dir", "metrics": "metrics_path", "plots": "plots_dir"},
    "evaluate": {"data": "data_dir", "model": "model_dir", "classifier": "classifier_dir", "metrics": "metrics_path", "plots": "plots_dir"},
    "register": {"data": "data_dir", "model": "model_dir", "classifier": "classifier_dir", "metrics": "eval_metrics_path", "out": "out_path"},
}

DATA = "data/prepared"
AUTOENCODER = "models/autoencoder"
FEATURES = "features"
CLASSIFIER = "models/classifier"
PLOTS = "plots"


def cmd_stage(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages.runner import run_stage

    paths = {dest: getattr(args, opt) for opt, dest in STAGE_ARGS[args.command].items()}
    result = run_stage(args.command, params, **paths)
    result.pop("history", None)
    return result


def cmd_params(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    return params.flat()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aepipe", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[..., Any], help_text: str, **paths: tuple[str, str]) -> None:
        p = sub.add_parser(name, help=help_text)
        for opt, (default, text) in paths.items():
            p.add_argument(f"--{opt}", default=default, help=f"{text} (default: {default})")
        p.set_defaults(fn=fn)

    add("prepare", cmd_stage, "load data.source, split, write the prepared dataset", out=(DATA, "prepared dataset dir"))
    add(
        "pretrain", cmd_stage, "train the autoencoder without labels",
        data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder output dir"),
        metrics=("metrics/pretrain.json", "metrics file"), plots=(PLOTS, "plots dir"),
    )
    add("extract", cmd_stage, "encode every split with the frozen encoder", data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder"), out=(FEATURES, "features dir"))
    add(
        "train", cmd_stage, "fit the classifier head (model selection on validation)",
        data=(DATA, "prepared dataset"), features=(FEATURES, "features dir"), model=(AUTOENCODER, "autoencoder"),
        out=(CLASSIFIER, "classifier output dir"), metrics=("metrics/train.json", "metrics file"), plots=(PLOTS, "plots dir"),
    )
    add(
        "evaluate", cmd_stage, "score the pair on the test split",
        data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder"), classifier=(CLASSIFIER, "classifier"),
        metrics=("metrics/eval.json", "metrics file"), plots=(PLOTS, "plots dir"),
    )
    add(
        "register", cmd_stage, "log the pair to MLflow and register it as the challenger",
        data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder"), classifier=(CLASSIFIER, "classifier"),
        metrics=("metrics/eval.json", "evaluation metrics"), out=("reports/registration.json", "registration record"),
    )
    add("params", cmd_params, "validate params.yaml and print the flattened values")
    from aepipe.pipeline_cli import add_pipeline_commands

    add_pipeline_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from aepipe.config import load_params

        params = load_params(args.params)
        result = args.fn(args, params)
    except AepipeError as exc:
        print(f"aepipe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
