"""``aepipe <stage>``: the commands ``dvc.yaml`` runs, each a thin wrapper over aepipe.stages.

Default paths are the ones dvc.yaml declares. Every command validates params.yaml first, so a
bad key fails before anything is written; user errors print one clear line and exit 2. A stage
prints a line or two for a person (what it did, the headline numbers, where its outputs are);
``--json`` prints its full result instead, and the metrics files hold it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from aepipe.errors import AepipeError
from aepipe.paths import STAGE_ARGS

# The help text of each path flag of the stage commands (flags and defaults: aepipe.paths).
PATH_HELP: dict[str, dict[str, str]] = {
    "prepare": {"out": "prepared dataset dir"},
    "pretrain": {
        "data": "prepared dataset",
        "model": "autoencoder output dir",
        "metrics": "metrics file",
        "plots": "plots dir",
    },
    "extract": {"data": "prepared dataset", "model": "autoencoder", "out": "features dir"},
    "train": {
        "data": "prepared dataset",
        "features": "features dir",
        "model": "autoencoder",
        "out": "classifier output dir",
        "metrics": "metrics file",
        "plots": "plots dir",
    },
    "evaluate": {
        "data": "prepared dataset",
        "model": "autoencoder",
        "classifier": "classifier",
        "metrics": "metrics file",
        "plots": "plots dir",
    },
    "register": {
        "data": "prepared dataset",
        "model": "autoencoder",
        "classifier": "classifier",
        "metrics_dir": "dir of pretrain/train/eval.json",
        "plots": "plots dir (review pack)",
        "out": "registration record",
    },
}


def cmd_stage(args: argparse.Namespace, params: Any) -> dict[str, Any] | None:
    from aepipe.io import sweep_leftovers
    from aepipe.stages import outputs
    from aepipe.stages.runner import run_stage

    paths = {dest: getattr(args, opt) for opt, (dest, _) in STAGE_ARGS[args.command].items()}
    outs = outputs.stage_outputs(args.command, paths)
    for out in outs:  # temp files of a killed earlier run
        sweep_leftovers(out)
    before = outputs.snapshot(outs)
    try:
        if args.command == "register" and args.best:
            result = cmd_register_best(args, params)
        else:
            if args.command == "register":
                paths["select"] = args.select
            result = run_stage(args.command, params, **paths)
    except AepipeError as exc:  # end the message with the truth about every output
        text = str(exc).rstrip()
        exc.args = (
            f"{text}{'' if text.endswith('.') else '.'} {outputs.describe(args.command, before)}".rstrip(),
        )
        raise
    result.pop("history", None)
    if args.json:
        return result
    from aepipe.summary import stage_lines

    print("\n".join(stage_lines(args.command, result, paths)), flush=True)
    return None


def cmd_register_best(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.stages.register import run_best
    from aepipe.tracking.lineage import client

    client(existing_store=True)
    data_hash = args.data_hash or _prepared_hash(args.data)
    return run_best(params, data_hash, args.out)


def _prepared_hash(data_dir: str) -> str:
    from aepipe.data.prepared import load_prepared

    return str(load_prepared(data_dir, mmap=True).meta["data_hash"])


def cmd_promote(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.tracking.lineage import client
    from aepipe.tracking.promotion import promote

    cfg = params.mlflow
    margin = cfg.promotion_margin if args.margin is None else args.margin
    d = promote(
        client(existing_store=True),
        args.name or cfg.model_name,
        cfg.promotion_metric,
        margin,
        args.version,
        args.force,
        args.reason,
        alpha=cfg.promotion_alpha,
        experiment=cfg.experiment,
        challenger=cfg.alias,
    )
    for note in d.repaired:
        print(f"aepipe promote: repaired: {note}", file=sys.stderr)
    if not d.promoted:
        print(f"aepipe promote: {d.message}", file=sys.stderr)
        raise SystemExit(d.exit_code)
    return {
        "promoted": d.promoted,
        "outcome": d.outcome,
        "champion": d.version,
        "previous_champion": d.previous,
        "message": d.message,
        "gate": (d.gate or {}).get("tags"),
    }


def cmd_rollback(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    from aepipe.tracking.lineage import client
    from aepipe.tracking.promotion import rollback

    d = rollback(client(existing_store=True), args.name or params.mlflow.model_name, args.reason)
    for note in d.repaired:
        print(f"aepipe rollback: repaired: {note}", file=sys.stderr)
    return {"champion": d.version, "rolled_back_from": d.previous, "message": d.message}


def cmd_status(args: argparse.Namespace, params: Any) -> Any:
    from aepipe.tracking.lineage import client
    from aepipe.tracking.promotion import status

    report = status(client(existing_store=True), args.name or params.mlflow.model_name, args.history)
    for warning in report["warnings"]:
        print(f"aepipe status: WARNING: {warning}", file=sys.stderr)
    if args.json:
        return report
    print(status_text(report))
    return None


def status_text(report: dict[str, Any]) -> str:
    def fmt(held: dict[str, str]) -> str:
        return ", ".join(f"{a} -> v{v}" for a, v in sorted(held.items())) or "(none)"

    lines = [
        f"{report['model']}: {fmt(report['aliases'])}",
        f"{report['model']}-encoder: {fmt(report['encoder_aliases'])}",
    ]
    last = report["last_registration"]
    if last:
        lines.append(f"last registration ({last.get('at')}): {last.get('outcome')}")
    for w in report["warnings"]:
        lines.append(f"WARNING: {w}")
    for v in report["versions"]:
        alias = f" [{', '.join(v['aliases'])}]" if v["aliases"] else ""
        pending = "" if v["registration"] == "complete" else f" (registration {v['registration']})"
        lines.append(
            f"v{v['version']}{alias}{pending}: {v['variant']}+{v['head']} labels={v['labels_used']} "
            f"val_accuracy={v['val_accuracy']} test_accuracy={v['test_accuracy']} "
            f"run={(v['source_run'] or '')[:8]}"
        )
        if v["gate"]:
            lines.append(f"    gate: {v['gate'].get('result')}: {v['gate'].get('summary', '')}")
        for key, value in sorted((v["audit"] or {}).items()):
            lines.append(f"    {key}: {value}")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace, params: Any) -> Any:
    from aepipe.predict import check_inputs, predict, remote_uri
    from aepipe.tracking.lineage import client

    check_inputs(args.images)
    if remote_uri(args.model):
        client(existing_store=True)  # tracking URI + fast failure when the server is down
    rows = predict(args.model, args.images, args.alpha)
    if args.json:
        return rows
    for r in rows:
        probabilities = " ".join(f"{p:.4f}" for p in r["probabilities"])
        print(f"{r['input']}\t{r['class']}\t{r['probability']:.4f}\t{probabilities}")
    return None


def cmd_summary(args: argparse.Namespace, params: Any) -> None:
    from aepipe.summary import run_summary

    print("\n".join(run_summary(args.metrics, args.registration)))


def cmd_params(args: argparse.Namespace, params: Any) -> dict[str, Any]:
    flat: dict[str, Any] = params.flat()
    return flat


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aepipe", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[..., Any], help_text: str, **paths: tuple[str, str]) -> None:
        p = sub.add_parser(name, help=help_text)
        for opt, (default, text) in paths.items():
            p.add_argument(f"--{opt.replace('_', '-')}", default=default, help=f"{text} (default: {default})")
        if fn is cmd_stage:
            p.add_argument(
                "--json",
                action="store_true",
                help="print the stage's full result as JSON (default: one line)",
            )
        p.set_defaults(fn=fn)

    stage_help = {
        "prepare": "load data.source, split, write the prepared dataset",
        "pretrain": "train the autoencoder without labels",
        "extract": "encode every split with the frozen encoder",
        "train": "fit the classifier head (model selection on validation)",
        "evaluate": "score the pair on the test split",
        "register": "log the pair as a candidate, register the best candidate (validation) as challenger",
    }
    for stage, text in stage_help.items():
        add(
            stage,
            cmd_stage,
            text,
            **{flag: (default, PATH_HELP[stage][flag]) for flag, (_, default) in STAGE_ARGS[stage].items()},
        )
    reg = sub.choices["register"]
    mode = reg.add_mutually_exclusive_group()
    mode.add_argument(
        "--best",
        action="store_true",
        help="only select among existing candidates (no new candidate is logged)",
    )
    mode.add_argument(
        "--select",
        choices=("best", "current"),
        default="best",
        help="register the best candidate (default) or this run's pair",
    )
    reg.add_argument("--data-hash", help="with --best: data hash of the candidates (default: that of --data)")

    p = sub.add_parser(
        "promote", help="move alias champion to the challenger (or --version N) if it beats the champion"
    )
    p.add_argument("--version", help="version to promote (default: the challenger)")
    p.add_argument("--name", help="registered model (default: mlflow.model_name)")
    p.add_argument("--margin", type=float, help="required improvement (default: mlflow.promotion_margin)")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (needs --reason)")
    p.add_argument("--reason", help="why; recorded on the version")
    p.set_defaults(fn=cmd_promote)

    p = sub.add_parser("rollback", help="give champion back to previous-champion")
    p.add_argument("--name", help="registered model (default: mlflow.model_name)")
    p.add_argument("--reason", help="why; recorded on the demoted version")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("status", help="aliases, gate results and the audit trail of the registered model")
    p.add_argument("--name", help="registered model (default: mlflow.model_name)")
    p.add_argument("--history", type=int, default=10, help="how many recent versions to list (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("predict", help="classify PNG/JPEG files, .npy or .npz arrays with a model")
    p.add_argument(
        "--model",
        required=True,
        help="models:/NAME@ALIAS, models:/NAME/N, runs:/RUN/model, or a local directory of an aepipe pair "
        "model",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    p.add_argument(
        "--alpha",
        choices=("white", "black", "refuse"),
        default=None,
        help="image files with transparency: composited over a white or black background, or refused "
        "(default: the data.alpha the model was trained with, recorded in it; white for a model that "
        "predates the record); a model trained over white or black refuses the other",
    )
    p.add_argument("images", nargs="+", help="image files, .npy (N×C×H×W uint8) or .npz (key x)")
    p.set_defaults(fn=cmd_predict)
    add("params", cmd_params, "validate params.yaml and print the flattened values")
    add(
        "summary",
        cmd_summary,
        "the end of `make run`: test accuracy and macro-F1, the registered model, what to do next",
        metrics=("metrics/eval.json", "evaluate's metrics"),
        registration=("reports/registration.json", "register's record"),
    )
    from aepipe.pipeline_cli import add_pipeline_commands

    add_pipeline_commands(sub)
    return parser


def _quiet_library_logs() -> None:
    """MLflow logs at INFO what a command-line user has no use for: the alembic migrations of a
    new sqlite store (on a clean clone, ahead of a real error line), "Validating input example
    against model signature" for each logged model. The stages print what they did themselves.

    ``MLFLOW_LOGGING_LEVEL`` (read when mlflow is first imported, which is later) keeps MLflow's
    warnings and errors; a user who sets it keeps their own level.
    """
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_library_logs()
    try:
        from aepipe.config import load_params

        params = load_params(args.params)
        result = args.fn(args, params)
    except AepipeError as exc:
        print(f"aepipe {args.command}: error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):  # e.g. a stage run MLflow could not close
            print(f"aepipe {args.command}: {note}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
