"""``aepipe <stage>``: the commands ``dvc.yaml`` runs, each a thin wrapper over aepipe.stages.

Default paths are the ones dvc.yaml declares. Every command validates params.yaml first, so a
bad key fails before anything is written; user errors print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aepipe.errors import AepipeError

DATA = "data/prepared"
AUTOENCODER = "models/autoencoder"
FEATURES = "features"
CLASSIFIER = "models/classifier"
PLOTS = "plots"


def _data_hash(data_dir: str) -> str | None:
    meta = Path(data_dir) / "meta.json"
    return json.loads(meta.read_text()).get("data_hash") if meta.is_file() else None


def cmd_prepare(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages import prepare
    from aepipe.tracking.lineage import stage_run

    with stage_run("prepare", params) as tracker:
        result = prepare.run(params, args.out, tracker)
        tracker.client.set_tag(tracker.parent_run_id, "aepipe.data_hash", result["data_hash"])
    return result


def cmd_pretrain(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages import pretrain
    from aepipe.tracking.lineage import stage_run

    with stage_run("pretrain", params, _data_hash(args.data)) as tracker:
        result = pretrain.run(params, args.data, args.model, args.metrics, args.plots, tracker)
    result.pop("history")
    return result


def cmd_extract(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages import extract
    from aepipe.tracking.lineage import stage_run

    with stage_run("extract", params, _data_hash(args.data)) as tracker:
        return extract.run(params, args.data, args.model, args.out, tracker)


def cmd_train(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages import train
    from aepipe.tracking.lineage import stage_run

    with stage_run("train", params, _data_hash(args.data)) as tracker:
        return train.run(params, args.data, args.features, args.model, args.out, args.metrics, args.plots, tracker)


def cmd_evaluate(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages import evaluate
    from aepipe.tracking.lineage import stage_run

    with stage_run("evaluate", params, _data_hash(args.data)) as tracker:
        return evaluate.run(params, args.data, args.model, args.classifier, args.metrics, args.plots, tracker)


def cmd_register(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages import register
    from aepipe.tracking.lineage import finish_parent, stage_run

    with stage_run("register", params, _data_hash(args.data)) as tracker:
        result = register.run(params, args.data, args.model, args.classifier, args.metrics, args.out, tracker.run_id)
    finish_parent(tracker)
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

    add("prepare", cmd_prepare, "load data.source, split, write the prepared dataset", out=(DATA, "prepared dataset dir"))
    add(
        "pretrain", cmd_pretrain, "train the autoencoder without labels",
        data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder output dir"),
        metrics=("metrics/pretrain.json", "metrics file"), plots=(PLOTS, "plots dir"),
    )
    add("extract", cmd_extract, "encode every split with the frozen encoder", data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder"), out=(FEATURES, "features dir"))
    add(
        "train", cmd_train, "fit the classifier head (model selection on validation)",
        data=(DATA, "prepared dataset"), features=(FEATURES, "features dir"), model=(AUTOENCODER, "autoencoder"),
        out=(CLASSIFIER, "classifier output dir"), metrics=("metrics/train.json", "metrics file"), plots=(PLOTS, "plots dir"),
    )
    add(
        "evaluate", cmd_evaluate, "score the pair on the test split",
        data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder"), classifier=(CLASSIFIER, "classifier"),
        metrics=("metrics/eval.json", "metrics file"), plots=(PLOTS, "plots dir"),
    )
    add(
        "register", cmd_register, "log the pair to MLflow and register it as the challenger",
        data=(DATA, "prepared dataset"), model=(AUTOENCODER, "autoencoder"), classifier=(CLASSIFIER, "classifier"),
        metrics=("metrics/eval.json", "evaluation metrics"), out=("reports/registration.json", "registration record"),
    )
    add("params", cmd_params, "validate params.yaml and print the flattened values")
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
