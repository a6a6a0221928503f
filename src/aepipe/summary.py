"""What a person reads: one line per stage, and the summary at the end of ``make run``.

The stages return full result dicts (the metrics files hold them, ``aepipe <stage> --json`` prints
them); these functions turn a result into the line or two a person needs: what was done, the
headline numbers, where the outputs are. No heavy imports: ``aepipe summary`` runs in a blink.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aepipe.errors import AepipeError
from aepipe.paths import PLOT_FILES
from aepipe.stages.outputs import OUTPUT_ARGS


def _count(n: Any) -> str:
    return f"{int(n):,}"


def _where(stage: str, paths: Mapping[str, Any]) -> str:
    shown = [str(paths[k]) for k in OUTPUT_ARGS[stage] if paths.get(k)]
    if stage in PLOT_FILES and paths.get("plots_dir"):
        shown.append(f"{paths['plots_dir']}/")
    return f" -> {', '.join(shown)}" if shown else ""


def stage_lines(stage: str, result: Mapping[str, Any], paths: Mapping[str, Any]) -> list[str]:
    """One or two lines on what ``stage`` did, from its result dict and its output paths."""
    r, head, where = result, f"aepipe {stage}:", _where(stage, paths)
    if stage == "prepare":
        counts = r["counts"]
        shape = "x".join(str(s) for s in r["shape"])
        splits = " / ".join(f"{k} {_count(v)}" for k, v in counts.items())
        total = _count(sum(counts.values()))
        # (a remapping of the labels, if any, prepare itself reported on stderr)
        return [f"{head} {total} images {shape}, {r['classes']} classes; {splits}{where}"]
    if stage == "pretrain":
        if "final_val_loss" not in r:  # a torchrun rank other than 0: it trained its slice only
            return [f"{head} rank {r.get('rank')} done on {r.get('device')} in {r.get('seconds')} s"]
        extra = f", resumed at epoch {r['resumed_from_epoch']}" if r.get("resumed_from_epoch") else ""
        extra += f", from {r['init_from']}" if r.get("init_from") else ""
        ranks = f" x {r['world_size']} ranks" if r.get("world_size", 1) > 1 else ""
        how = f"{r['epochs']} epochs in {r['seconds']:.1f} s on {r.get('device', '?')}{ranks}{extra}"
        return [f"{head} {how}; val loss {r['final_val_loss']:.4f}{where}"]
    if stage == "extract":
        shapes = r["shapes"]
        dim = next(iter(shapes.values()))[1] if shapes else 0
        splits = " / ".join(f"{k} {_count(v[0])}" for k, v in shapes.items())
        return [f"{head} {dim} features per image; {splits}{where}"]
    if stage == "train":
        extra = f", resumed at epoch {r['resumed_from_epoch']}" if r.get("resumed_from_epoch") else ""
        fitted = f"{r.get('head', 'head')} fitted on {_count(r['labels_used'])} labels{extra}"
        return [f"{head} {fitted}; val accuracy {r['val_accuracy']:.4f}{where}"]
    if stage == "evaluate":
        scores = f"test accuracy {r['test_accuracy']:.4f}, macro-F1 {r['test_macro_f1']:.4f}"
        return [f"{head} {scores} on {_count(r['n_test'])} images{where}"]
    if stage == "register":
        return [f"{head} {r['outcome']}", f"{head} {r['model_uri']}{where}"]
    raise ValueError(f"unknown stage {stage!r}")


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AepipeError(
            f"{path} not found: no {what} yet; run the pipeline first (`make run` or `dvc repro`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise AepipeError(f"{path}: cannot read {what} ({exc}); re-run the pipeline (`dvc repro`)") from None
    if not isinstance(data, dict):
        raise AepipeError(f"{path}: expected a JSON object ({what}); re-run the pipeline (`dvc repro`)")
    return data


def _field(data: Mapping[str, Any], key: str, path: Path, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise AepipeError(
            f"{path}: field {key!r} is missing or not a {getattr(kind, '__name__', 'value')}; "
            "re-run the pipeline (`dvc repro`)"
        )
    return value


def run_summary(metrics_path: str | Path, registration_path: str | Path) -> list[str]:
    """The end of ``make run``: this run's test scores, the registered model, what to do next.

    The metrics file is required (an error names it and how to get it); a missing registration
    record becomes a line saying so, since the scores alone are still worth reading.
    """
    metrics_path, registration_path = Path(metrics_path), Path(registration_path)
    m = _read(metrics_path, "test metrics")
    acc = _field(m, "test_accuracy", metrics_path, (int, float))
    f1 = _field(m, "test_macro_f1", metrics_path, (int, float))
    n = m.get("n_test")
    on = f" on {_count(n)} test images" if isinstance(n, int) else ""
    lines = [f"Result:  test accuracy {acc:.4f}, macro-F1 {f1:.4f}{on} ({metrics_path})"]
    if registration_path.is_file():
        reg = _read(registration_path, "registration record")
        name = _field(reg, "model_name", registration_path, str)
        version = _field(reg, "version", registration_path, str)
        alias = _field(reg, "alias", registration_path, str)
        if reg.get("this_run_selected"):
            whose = "this run's model" + ("" if reg.get("created") else ", registered before")
        else:
            whose = "an earlier run's model, better on validation; this run's was not registered"
        lines.append(f"Model:   {name} v{version}, alias {alias} ({whose}): models:/{name}@{alias}")
    else:
        lines.append(f"Model:   none registered ({registration_path} not found; `dvc repro` runs register)")
    lines += [
        "Next:    make ui                              MLflow UI: runs, metrics, registered models",
        "         aepipe promote                       make the challenger champion if the gate agrees",
        "         dvc exp run -S pretrain.epochs=50    an experiment with other params (dvc exp show)",
    ]
    return lines
