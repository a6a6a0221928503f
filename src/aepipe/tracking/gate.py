"""The promotion gate: challenger vs champion on the same test images.

Each registered version's source run holds its per-image test predictions
(``review/test_predictions.csv``, written by ``register``). The gate

1. checks both versions were evaluated on the same data (data hash, and the very same labels in
   the same order);
2. evaluates both with MLflow's own ``mlflow.models.evaluate`` (static predictions, classifier),
   each in a nested run of a ``gate`` run in the experiment, so the two confusion matrices and
   metric sets sit side by side in the UI; the challenger's evaluation also computes the exact
   McNemar p-value on the pairs (challenger right / champion wrong vs the reverse);
3. decides with ``mlflow.validate_evaluation_results`` and ``MetricThreshold``: the promotion
   metric must beat the champion's by more than ``mlflow.promotion_margin`` (a margin of 0 means
   strictly better), and the p-value must be at most ``mlflow.promotion_alpha``.

Numbers and the decision are returned as version tags (``aepipe.gate.*``) for the caller to record.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from aepipe.tracking import registry

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.metrics import MetricValue
    from mlflow.models import EvaluationResult

# promotion metric (params) -> the key mlflow.models.evaluate reports it under (macro average)
EVAL_KEYS = {"test_accuracy": "accuracy_score", "test_macro_f1": "f1_score"}
P_VALUE = "mcnemar/p_value"
STRICT = 1e-9  # "strictly better" for margin 0: MetricThreshold needs a positive change


def mcnemar_exact(challenger_right: np.ndarray, champion_right: np.ndarray) -> tuple[int, int, float]:
    """(b, c, two-sided exact p): b = images only the challenger gets right, c = only the champion."""
    from scipy.stats import binomtest

    b = int((challenger_right & ~champion_right).sum())
    c = int((~challenger_right & champion_right).sum())
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return b, c, p


def _predictions(client: MlflowClient, name: str, version: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    run_id = version.tags.get("aepipe.source_run_id") or version.run_id
    if not run_id:
        raise _Unpaired(f"v{version.version} has no source run, so no per-image test predictions")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            listed = {a.path for a in client.list_artifacts(run_id, "review")}
        except Exception as exc:
            raise registry.registry_error(
                f"listing the review pack of {name} v{version.version}", exc
            ) from None
        if registry.PREDICTIONS not in listed:
            raise _Unpaired(
                f"v{version.version} has no per-image test predictions ({registry.PREDICTIONS} of run "
                f"{run_id}; versions registered before the paired gate lack them)"
            )
        try:
            local = client.download_artifacts(run_id, registry.PREDICTIONS, tmp)
        except Exception as exc:
            raise registry.registry_error(
                f"downloading the predictions of {name} v{version.version}", exc
            ) from None
        with open(local, newline="") as f:
            rows = list(csv.DictReader(f))
    try:
        order = np.array([int(r["index"]) for r in rows])
        labels = np.array([int(r["label"]) for r in rows])
        pred = np.array([int(r["prediction"]) for r in rows])
    except (KeyError, ValueError) as exc:
        raise _Unpaired(
            f"v{version.version}: {registry.PREDICTIONS} is not index,label,prediction ({exc})"
        ) from None
    if not np.array_equal(order, np.arange(len(order))):
        raise _Unpaired(f"v{version.version}: {registry.PREDICTIONS} rows are not the test split in order")
    return labels, pred


class _Unpaired(Exception):
    """The two versions cannot be compared image by image (a refusal, not an error)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """mlflow.evaluate prints run URLs on stdout (the CLI's JSON) and warns about static data."""
    old = os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    loggers = [logging.getLogger(n) for n in ("mlflow.models.evaluation", "mlflow.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if old is None:
            os.environ.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
        else:
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = old


def _evaluate(
    client: MlflowClient,
    exp_id: str,
    parent: str,
    title: str,
    labels: np.ndarray,
    pred: np.ndarray,
    other: np.ndarray | None,
) -> EvaluationResult:
    import mlflow
    import pandas as pd
    from mlflow.metrics import MetricValue
    from mlflow.models import make_metric

    data = {"label": labels, "prediction": pred}
    extra = []
    if other is not None:
        data["champion_prediction"] = other

        def mcnemar(
            predictions: pd.Series, targets: pd.Series, champion_prediction: pd.Series
        ) -> MetricValue:
            t = targets.to_numpy()
            _, _, p = mcnemar_exact(predictions.to_numpy() == t, champion_prediction.to_numpy() == t)
            return MetricValue(aggregate_results={"p_value": p})

        extra = [make_metric(eval_fn=mcnemar, greater_is_better=False, name="mcnemar")]
    run = client.create_run(
        exp_id, run_name=title, tags={"mlflow.parentRunId": parent, "aepipe.kind": "gate"}
    )
    with mlflow.start_run(run_id=run.info.run_id):
        result: EvaluationResult = mlflow.models.evaluate(
            data=pd.DataFrame(data),
            predictions="prediction",
            targets="label",
            model_type="classifier",
            evaluator_config={"average": "macro", "log_model_explainability": False},
            extra_metrics=extra,
        )
        return result


def run_gate(
    client: MlflowClient,
    name: str,
    cand: ModelVersion,
    champ: ModelVersion,
    metric: str,
    margin: float,
    alpha: float,
    experiment: str,
) -> dict[str, Any]:
    """{"passed", "summary", "tags"}; raises TrackingError only for registry/tracking failures."""
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    ver, champ_ver = str(cand.version), str(champ.version)

    def refuse(why: str) -> dict[str, Any]:
        return {
            "passed": False,
            "summary": why,
            "tags": {"aepipe.gate.champion_version": champ_ver, "aepipe.gate.summary": why[:5000]},
        }

    h1, h2 = cand.tags.get("aepipe.data_hash", "?"), champ.tags.get("aepipe.data_hash", "?")
    if h1 != h2:
        return refuse(f"evaluated on different data (challenger {h1[:12]}, champion {h2[:12]})")
    try:
        labels, pred = _predictions(client, name, cand)
        champ_labels, champ_pred = _predictions(client, name, champ)
    except _Unpaired as exc:
        return refuse(f"the paired test cannot run: {exc}")
    if not np.array_equal(labels, champ_labels):
        return refuse(
            f"v{ver} and v{champ_ver} were scored on different test images (labels differ although the data "
            "hash matches)"
        )
    key = EVAL_KEYS[metric]
    gate_id = None
    try:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        gate_run = client.create_run(
            exp_id,
            run_name=f"gate {name} v{ver} vs champion v{champ_ver}",
            tags={
                "aepipe.kind": "gate",
                "aepipe.model": name,
                "aepipe.challenger": ver,
                "aepipe.champion": champ_ver,
            },
        )
        gate_id = gate_run.info.run_id
        with _quiet():
            mine = _evaluate(client, exp_id, gate_id, f"challenger v{ver}", labels, pred, champ_pred)
            theirs = _evaluate(client, exp_id, gate_id, f"champion v{champ_ver}", labels, champ_pred, None)
    except Exception as exc:
        if gate_id is not None:
            with contextlib.suppress(Exception):
                client.set_terminated(gate_id, "FAILED")
        raise registry.registry_error(f"evaluating v{ver} against v{champ_ver} for the gate", exc) from None
    b, c, p = mcnemar_exact(pred == labels, champ_pred == labels)
    value, champ_value = float(mine.metrics[key]), float(theirs.metrics[key])
    failures = []
    checks = [
        ({key: MetricThreshold(min_absolute_change=max(margin, STRICT), greater_is_better=True)}, theirs),
        ({P_VALUE: MetricThreshold(threshold=alpha, greater_is_better=False)}, None),
    ]
    with _quiet():
        for thresholds, baseline in checks:
            try:
                mlflow.validate_evaluation_results(thresholds, mine, baseline)
            except ModelValidationFailedException as exc:
                failures.append(str(exc).strip())
    numbers = (
        f"{metric}: challenger v{ver} {value:.4f} vs champion v{champ_ver} {champ_value:.4f} "
        f"(margin {margin:.4f}); paired on {len(labels)} test images: {b} only the challenger gets right, "
        f"{c} only the champion, exact McNemar p={p:.4g} (alpha {alpha})"
    )
    if not failures:
        verdict = "passed"
    elif value == champ_value:
        verdict = (
            f"tie: both reach {metric} {value:.4f}, so the champion stays (a challenger must be better by "
            f"more than the margin, and significantly: p <= {alpha})"
        )
    elif value <= champ_value + margin:
        verdict = "not better than the champion by the margin"
    else:
        verdict = f"better, but not significantly (p={p:.4g} > alpha {alpha}): the difference may be chance"
    summary = f"{numbers}; {verdict}"
    tags = {
        "aepipe.gate.champion_version": champ_ver,
        f"aepipe.gate.challenger_{metric}": f"{value:.6f}",
        f"aepipe.gate.champion_{metric}": f"{champ_value:.6f}",
        "aepipe.gate.mcnemar_p": f"{p:.6g}",
        "aepipe.gate.only_challenger_right": str(b),
        "aepipe.gate.only_champion_right": str(c),
        "aepipe.gate.images": str(len(labels)),
        "aepipe.gate.margin": str(margin),
        "aepipe.gate.alpha": str(alpha),
        "aepipe.gate.run_id": gate_id,
        "aepipe.gate.result": "passed" if not failures else "refused",
        "aepipe.gate.summary": summary[:5000],
    }
    try:
        for k, v in tags.items():
            if k.startswith("aepipe.gate.") and k not in ("aepipe.gate.summary", "aepipe.gate.run_id"):
                client.set_tag(gate_id, k, v)
        client.set_terminated(gate_id, "FINISHED")
    except Exception as exc:
        raise registry.registry_error("recording the gate run", exc) from None
    return {"passed": not failures, "summary": summary, "tags": tags, "failures": failures}
