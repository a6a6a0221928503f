"""dvc.yaml's `params:` tell the truth: every param a stage reads while it runs is listed for that
stage, so `dvc repro` re-runs a stage when (and because) a param it uses changed, and never
replays outputs computed with another value. The stages run for real, in-process on digits, over
the variants and heads whose code paths read different params, with each field read recorded
(tests/param_reads.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aepipe.config import Params, parse_params
from aepipe.stages import STAGES
from tests.param_reads import covered, recorded_reads

pytestmark = pytest.mark.slow  # every stage for real, register against an MLflow server
REPO = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

TINY: dict[str, Any] = {"pretrain": {"epochs": 1}, "model": {"width": 4}}
# Stages whose reads may also be covered by an upstream stage's list, and why that is sound.
LINEAGE = {
    "register": "describes and tags the pair the upstream stages built (variant, head, labels) and "
    "re-scores it for the gate; a change to any of those params re-runs the upstream stage that "
    "lists it, whose new output re-runs register",
}


def upstream(stage: str, dvc: dict[str, Any]) -> set[str]:
    """Stages whose outputs ``stage`` depends on, transitively."""

    def outs(name: str) -> set[str]:
        found = set()
        for kind in ("outs", "metrics", "plots"):
            for out in dvc[name].get(kind, []):
                found.add(out if isinstance(out, str) else next(iter(out)))
        return found

    found: set[str] = set()
    todo = [stage]
    while todo:
        deps = [str(d) for d in dvc[todo.pop()].get("deps", [])]
        for other in dvc:
            if other not in found and any(
                d == o or d.startswith(o + "/") or o.startswith(d + "/") for d in deps for o in outs(other)
            ):
                found.add(other)
                todo.append(other)
    return found


def listed(stage: str, dvc: dict[str, Any]) -> list[str]:
    entries = [str(p) for p in dvc[stage].get("params", [])]
    if stage in LINEAGE:
        for other in upstream(stage, dvc):
            entries += [str(p) for p in dvc[other].get("params", [])]
    return entries


def unlisted_reads(reads: dict[str, set[str]], dvc: dict[str, Any]) -> dict[str, list[str]]:
    """Per stage, the keys it read that its dvc.yaml params do not cover."""
    out = {}
    for stage, keys in reads.items():
        missing = sorted(k for k in keys if not covered(k, listed(stage, dvc)))
        if missing:
            out[stage] = missing
    return out


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any) -> dict[str, set[str]]:
    """Run every stage (register against the real MLflow server) and collect what each reads."""
    import mlflow

    from aepipe.stages import evaluate, extract, prepare, pretrain, register, train
    from aepipe.tracking.lineage import stage_run

    root = tmp_path_factory.mktemp("param-reads")
    found: dict[str, set[str]] = {stage: set() for stage in STAGES}

    def record(stage: str, params: Params, call: Any) -> Any:
        with recorded_reads(params) as keys:
            result = call()
        found[stage] |= keys
        return result

    p = parse_params(TINY)
    data, ae, feats, clf, metrics, plots = (root / n for n in ("data", "ae", "f", "clf", "metrics", "plots"))
    record("prepare", p, lambda: prepare.run(p, data))
    record("pretrain", p, lambda: pretrain.run(p, data, ae, metrics / "pretrain.json", plots))
    record("extract", p, lambda: extract.run(p, data, ae, feats))
    record("train", p, lambda: train.run(p, data, feats, ae, clf, metrics / "train.json", plots))
    record("evaluate", p, lambda: evaluate.run(p, data, ae, clf, metrics / "eval.json", plots))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        try:
            with stage_run("register", p) as tracker:
                record(
                    "register",
                    p,
                    lambda: register.run(
                        p, data, ae, clf, metrics, root / "registration.json", plots, tracker=tracker
                    ),
                )
        finally:
            mlflow.set_tracking_uri(None)
    # the heads other than the default's read their own sections, and the few-label path (auto ->
    # semisup) more of classifier.*; a label-free variant takes pretrain's other branch
    for i, extra in enumerate(
        [
            {"classifier": {"head": "finetune", "finetune": {"max_epochs": 1}}},
            {"classifier": {"head": "mlp", "mlp": {"max_epochs": 1}}},
            {"classifier": {"labels_per_class": 5, "semisup": {"max_epochs": 1, "steps_per_epoch": 2}}},
        ]
    ):
        q = parse_params(TINY | extra)
        record(
            "train",
            q,
            lambda q=q, i=i: train.run(
                q, data, feats, ae, root / f"clf{i}", root / f"t{i}.json", root / f"p{i}"
            ),
        )
    q = parse_params({**TINY, "model": {"width": 4, "name": "denoising"}})
    record("pretrain", q, lambda: pretrain.run(q, data, root / "ae-free", root / "pf.json", root / "pf"))
    return found


def test_every_param_a_stage_reads_is_listed_in_its_dvc_params(reads: dict[str, set[str]]) -> None:
    assert all(reads.values()), f"a stage read no params at all; the recorder is broken: {reads}"
    missing = unlisted_reads(reads, DVC)
    assert not missing, (
        "dvc.yaml: a stage reads params its `params:` do not list, so `dvc repro` would keep its "
        f"outputs when they change; add them to the stage's params: {missing}"
    )


def test_every_listed_param_is_read_by_its_stage(reads: dict[str, set[str]]) -> None:
    # a listed param no run reads re-runs the stage (pretrain: minutes) for a change that cannot
    # change its outputs
    unread = {
        stage: [e for e in map(str, spec.get("params", [])) if not any(covered(k, [e]) for k in reads[stage])]
        for stage, spec in DVC.items()
    }
    assert not any(unread.values()), f"dvc.yaml: params listed but never read: {unread}"


def test_the_check_names_a_param_missing_from_a_stage(reads: dict[str, set[str]]) -> None:
    """The check can fail: a dvc.yaml without pretrain's labelled-subset param (what vae_joint
    pretrains on) and with train's list cut to its head's section is reported, key by key."""
    broken = {stage: dict(spec) for stage, spec in DVC.items()}
    broken["pretrain"]["params"] = [
        p for p in DVC["pretrain"]["params"] if p != "classifier.labels_per_class"
    ]
    broken["train"]["params"] = ["seed", "device", "classifier.linear"]
    missing = unlisted_reads(reads, broken)
    assert missing["pretrain"] == ["classifier.labels_per_class"]
    assert "classifier.head" in missing["train"] and "classifier.semisup.threshold" in missing["train"]
    assert "classifier.linear.c_grid" not in missing["train"]
    # register is checked against the lists of the stages it depends on, which it reaches
    assert upstream("register", DVC) == {"prepare", "pretrain", "extract", "train", "evaluate"}
    assert "classifier.labels_per_class" in missing["register"]  # neither pretrain nor train lists it now
