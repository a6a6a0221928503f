"""Champion promotion and rollback, with MLflow aliases as the state the world reads.

**Faults.** All aliases are read in one call (``get_registered_model``); only MLflow's
RESOURCE_DOES_NOT_EXIST for the registered model means "nothing registered", an absent alias is a
plain dictionary miss, and every other error (a 503, a cut connection) aborts before anything is
written. A move is a short sequence of registry calls, so it is written as an *intent* first (a tag
on the registered model: kind, from, to, the previous champion), then the ``champion`` alias moves
(the commit point), then the rest follows (the encoder's aliases, ``previous-champion``, the
challenger alias, the record of who is champion) and the intent is deleted last. A crash anywhere
leaves either an intent whose champion never moved (dropped by the next call) or one whose
champion did (finished by the next call): every ``promote`` and ``rollback`` first repairs.

**The pair and its encoder move together**: ``<name>-encoder@champion`` follows the pair's
champion (the version tag ``aepipe.encoder_version``), so
``pretrain.init_from: models:/<name>-encoder@champion`` is the promoted encoder.

**The gate** (:mod:`aepipe.tracking.gate`): challenger and champion are compared on the same test
images with MLflow's evaluation API, a margin and a paired exact McNemar test; the numbers are
recorded on the challenger's version whether it passes or not.

Moving ``champion`` by hand in the MLflow UI skips all of this; ``aepipe status`` says so.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aepipe.errors import TrackingError
from aepipe.tracking import registry
from aepipe.tracking.registry import aliases, encoder_name, get_version, model_tags, registry_error

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
INTENT_TAG = "aepipe.promotion_intent"  # on the registered model while a move is in flight
CHAMPION_TAG = "aepipe.champion"  # on the registered model: the version aepipe last made champion
# On the registered model: the champions aepipe made, oldest first (JSON list; the last is the
# champion). Rollback walks it, so it steps back through promotions even when a version was
# champion twice (a per-version "previous" tag is overwritten then, and rollbacks would cycle).
HISTORY_TAG = "aepipe.champion_history"
HISTORY_MAX = 100


# What a promotion or rollback did, and the exit status `aepipe promote` / `rollback` reports for it:
# a refusal by the gate is a failure a script must see; "already the champion" is not.
Outcome = Literal["promoted", "rolled_back", "already_champion", "refused"]
EXIT_CODES: dict[str, int] = {"promoted": 0, "rolled_back": 0, "already_champion": 0, "refused": 1}


@dataclass
class Decision:
    outcome: Outcome
    version: str
    previous: str | None
    message: str
    gate: dict[str, Any] | None = None
    repaired: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        """The champion alias moved."""
        return self.outcome in ("promoted", "rolled_back")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _user() -> str:
    return os.environ.get("AEPIPE_USER") or getpass.getuser()


class _Writer:
    """Registry writes that report, when one fails, what was done before it and the state left."""

    def __init__(self, client: MlflowClient, name: str, what: str) -> None:
        self.client, self.name, self.what = client, name, what
        self.done: list[str] = []

    def __call__(self, step: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:
            done = "; ".join(self.done) or "nothing"
            raise registry_error(
                f"{self.what} at step '{step}' (done before it: {done}). The next `aepipe promote` or "
                "`aepipe rollback` repairs the aliases; `aepipe status` shows them",
                exc,
            ) from None
        self.done.append(step)


def _read_intent(tags: dict[str, str]) -> dict[str, Any] | None:
    try:
        return json.loads(tags[INTENT_TAG]) if tags.get(INTENT_TAG) else None
    except json.JSONDecodeError:
        return {"kind": "unreadable", "to": None}


def _history(tags: dict[str, str], champion: str | None) -> list[str] | None:
    """The recorded champion history, when it ends at today's ``champion`` (else None: none
    recorded, unreadable, or the champion was moved outside aepipe since)."""
    try:
        history = json.loads(tags.get(HISTORY_TAG) or "null")
    except json.JSONDecodeError:
        return None
    if not isinstance(history, list) or not history or not all(isinstance(v, str) for v in history):
        return None
    return history if history[-1] == champion else None


def _encoder_version(client: MlflowClient, name: str, ver: str | None) -> str | None:
    if not ver:
        return None
    v = get_version(client, name, ver)
    return v.tags.get(registry.ENCODER_VERSION_TAG) if v is not None else None


def _set_or_delete(
    w: _Writer, client: MlflowClient, model: str, alias: str, ver: str | None, held: dict[str, str]
) -> None:
    if ver:
        if held.get(alias) != ver:
            w(f"{model}@{alias} -> {ver}", client.set_registered_model_alias, model, alias, ver)
    elif alias in held:
        w(f"remove {model}@{alias}", client.delete_registered_model_alias, model, alias)


def _finish(client: MlflowClient, name: str, intent: dict[str, Any], w: _Writer) -> None:
    """Everything after the champion alias moved; each step is idempotent."""
    to, previous = intent["to"], intent.get("previous")
    enc = encoder_name(name)
    held = aliases(client, name) or {}
    enc_held = aliases(client, enc) or {}
    enc_to = _encoder_version(client, name, to)
    enc_prev = _encoder_version(client, name, previous)
    if enc_to or CHAMPION in enc_held:
        _set_or_delete(w, client, enc, CHAMPION, enc_to, enc_held)
        _set_or_delete(w, client, enc, PREVIOUS, enc_prev, enc_held)
    _set_or_delete(w, client, name, PREVIOUS, previous, held)
    challenger = intent.get("challenger") or CHALLENGER  # intents written before it was recorded
    if held.get(challenger) == to:
        w(f"remove {name}@{challenger}", client.delete_registered_model_alias, name, challenger)
        if enc_to and enc_held.get(challenger) == enc_to:
            w(f"remove {enc}@{challenger}", client.delete_registered_model_alias, enc, challenger)
    w(f"record {CHAMPION_TAG}={to}", client.set_registered_model_tag, name, CHAMPION_TAG, to)
    if intent.get("history"):
        history = json.dumps(intent["history"][-HISTORY_MAX:])
        w(f"record {HISTORY_TAG}", client.set_registered_model_tag, name, HISTORY_TAG, history)
    w("clear the intent", client.delete_registered_model_tag, name, INTENT_TAG)


def repair(client: MlflowClient, name: str) -> list[str]:
    """Finish or drop a move that a crash interrupted; what was repaired, in words."""
    tags = model_tags(client, name)
    intent = _read_intent(tags)
    if intent is None:
        return []
    held = aliases(client, name) or {}
    w = _Writer(client, name, f"repairing the interrupted {intent.get('kind')} of {name!r}")
    if intent.get("to") and held.get(CHAMPION) == intent["to"]:
        _finish(client, name, intent, w)
        return [f"finished the interrupted {intent['kind']} to v{intent['to']} ({'; '.join(w.done)})"]
    w("clear the intent", client.delete_registered_model_tag, name, INTENT_TAG)
    if held.get(CHAMPION) == intent.get("from"):
        return [
            f"dropped an interrupted {intent.get('kind')} to v{intent.get('to')}: the champion never moved"
        ]
    return [
        f"dropped an interrupted {intent.get('kind')} to v{intent.get('to')}: the champion was moved "
        f"meanwhile to v{held.get(CHAMPION)} outside aepipe"
    ]


def outside_move(client: MlflowClient, name: str, held: dict[str, str], tags: dict[str, str]) -> str | None:
    """A warning when ``champion`` was moved by hand (UI or API) rather than by promote/rollback."""
    champ = held.get(CHAMPION)
    if champ is None or _read_intent(tags) is not None:
        return None
    recorded = tags.get(CHAMPION_TAG)
    if recorded is None:
        v = get_version(client, name, champ)
        if v is not None and (v.tags.get("aepipe.promoted_at") or v.tags.get("aepipe.restored_at")):
            return None  # promoted before this record existed
    elif recorded == champ:
        return None
    last = (
        f"the last `aepipe promote`/`rollback` made v{recorded} champion"
        if recorded
        else "no aepipe promotion"
    )
    return (
        f"champion v{champ} was set outside `aepipe promote` ({last}): the gate, the audit tags, "
        f"previous-champion and {encoder_name(name)}@champion were skipped; "
        f"`aepipe promote --version {champ} --force --reason TEXT` records it properly"
    )


def _no_challenger(
    client: MlflowClient, name: str, held: dict[str, str], challenger: str = CHALLENGER
) -> TrackingError:
    last = registry.last_registration(client, name)
    if last is None:
        return TrackingError(
            f"registered model {name!r} has no {challenger!r} alias and no registration recorded; "
            "run the pipeline (`dvc repro`) or pass --version N"
        )
    champ = held.get(CHAMPION)
    where = " (it is the champion)" if champ == str(last.get("version")) else ""
    return TrackingError(
        f"registered model {name!r} has no {challenger!r} alias: the last registration ({last.get('at')}) "
        f"{last.get('outcome')}{where}; nothing new to promote. Pass --version N to promote another version"
    )


def _check_force(force: bool, reason: str | None) -> None:
    if force and not reason:
        raise TrackingError("--force needs --reason TEXT: a forced promotion records why")


def _aliases_repaired(client: MlflowClient, name: str) -> tuple[dict[str, str], list[str]]:
    """The model's aliases after finishing any alias move a crash interrupted, and what was repaired;
    a model that does not exist is an error (promote and rollback need one)."""
    held = aliases(client, name)
    if held is None:
        raise TrackingError(f"registered model {name!r} does not exist; run the pipeline (`dvc repro`) first")
    repaired = repair(client, name)
    if repaired:
        held = aliases(client, name) or {}
    return held, repaired


def promote(
    client: MlflowClient,
    name: str,
    metric: str,
    margin: float,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
    alpha: float = 0.05,
    experiment: str = "aepipe",
    challenger: str = CHALLENGER,
) -> Decision:
    """``challenger``: the alias `register` gives new versions (``mlflow.alias``), which promote
    reads when no --version is given and removes from the version it promotes."""
    from aepipe.tracking.gate import run_gate

    _check_force(force, reason)
    held, repaired = _aliases_repaired(client, name)
    if version is not None:
        cand = get_version(client, name, str(version))
        if cand is None:
            raise TrackingError(f"registered model {name!r} has no version {version}")
    elif challenger in held:
        cand = get_version(client, name, held[challenger])
        if cand is None:
            raise TrackingError(f"{name}@{challenger} points at version {held[challenger]}, which is gone")
    else:
        raise _no_challenger(client, name, held, challenger)
    ver = str(cand.version)
    champ_ver = held.get(CHAMPION)
    if champ_ver == ver:
        return Decision(
            "already_champion", ver, None, f"version {ver} is already the champion", repaired=repaired
        )
    champ = get_version(client, name, champ_ver) if champ_ver else None
    tags = model_tags(client, name)
    warning = outside_move(client, name, held, tags)
    history = _history(tags, champ_ver) or ([champ_ver] if champ_ver else [])

    gate: dict[str, Any]
    if champ is None:
        gate = {
            "passed": True,
            "summary": "no champion yet",
            "tags": {"aepipe.gate.result": "first champion"},
        }
    else:
        gate = run_gate(client, name, cand, champ, metric, margin, alpha, experiment)
    gate_tags = dict(gate["tags"])
    if not gate["passed"]:
        gate_tags["aepipe.gate.result"] = "forced" if force else "refused"
    w = _Writer(client, name, f"promoting {name} v{ver}")
    for key, value in gate_tags.items():
        w(f"gate tag {key}", client.set_model_version_tag, name, ver, key, value)
    note = f" (note: {warning})" if warning else ""
    if not gate["passed"] and not force:
        return Decision(
            "refused",
            ver,
            champ_ver,
            f"refused: {gate['summary']}; use --force --reason TEXT to override{note}",
            gate=gate,
            repaired=repaired,
        )

    when = _now()
    intent = {
        "kind": "promotion",
        "from": champ_ver,
        "to": ver,
        "previous": champ_ver,
        "at": when,
        "challenger": challenger,
        "history": [*history, ver],
    }
    w("write the intent", client.set_registered_model_tag, name, INTENT_TAG, json.dumps(intent))
    audit = {
        "aepipe.promoted_at": when,
        "aepipe.promoted_by": _user(),
        "aepipe.promotion_gate": gate["summary"],
        "aepipe.promotion_forced": str(bool(force)).lower(),
        "aepipe.promotion_reason": reason or "passed the gate",
        "aepipe.previous_champion": champ_ver or "",
    }
    for key, value in audit.items():
        w(f"audit tag {key}", client.set_model_version_tag, name, ver, key, value)
    if champ_ver:
        w("demotion tag", client.set_model_version_tag, name, champ_ver, "aepipe.demoted_at", when)
    w(f"{name}@{CHAMPION} -> {ver}", client.set_registered_model_alias, name, CHAMPION, ver)
    _finish(client, name, intent, w)
    return Decision(
        "promoted",
        ver,
        champ_ver,
        f"promoted v{ver} to {CHAMPION}"
        + (f" (forced: {reason})" if force else f"; {gate['summary']}")
        + note,
        gate=gate,
        repaired=repaired,
    )


def rollback(client: MlflowClient, name: str, reason: str | None = None) -> Decision:
    """Give ``champion`` back to ``previous-champion``; walk one step further back in the history."""
    held, repaired = _aliases_repaired(client, name)
    if PREVIOUS not in held:
        raise TrackingError(f"registered model {name!r} has no {PREVIOUS!r} alias: nothing to roll back to")
    prev = get_version(client, name, held[PREVIOUS])
    if prev is None:
        raise TrackingError(f"{name}@{PREVIOUS} points at version {held[PREVIOUS]}, which is gone")
    current = held.get(CHAMPION)
    target = str(prev.version)
    if current == target:
        raise TrackingError(
            f"{name}@{PREVIOUS} and @{CHAMPION} both point at v{target}: nothing to roll back to "
            f"(set {PREVIOUS} to an older version in the UI, or promote one with --version N --force)"
        )
    history = _history(model_tags(client, name), current)
    if history is not None and len(history) >= 2 and history[-2] == target:
        history = history[:-1]  # one promotion back; the one before it is the next rollback's
        older = history[-2] if len(history) >= 2 else None
    else:  # no history recorded (older versions of aepipe), or previous-champion set by hand
        older = prev.tags.get("aepipe.previous_champion") or None
        if older in (target, current):
            older = None  # never make the chain point at itself, or back at what is rolled back
        history = [older, target] if older else [target]
    when = _now()
    intent = {
        "kind": "rollback",
        "from": current,
        "to": target,
        "previous": older,
        "at": when,
        "history": history,
    }
    w = _Writer(client, name, f"rolling {name} back to v{target}")
    w("write the intent", client.set_registered_model_tag, name, INTENT_TAG, json.dumps(intent))
    w("restore tag", client.set_model_version_tag, name, target, "aepipe.restored_at", when)
    w("restore tag", client.set_model_version_tag, name, target, "aepipe.restored_by", _user())
    if current:
        w("rollback tag", client.set_model_version_tag, name, current, "aepipe.rolled_back_at", when)
        w(
            "rollback tag",
            client.set_model_version_tag,
            name,
            current,
            "aepipe.rollback_reason",
            reason or "rollback",
        )
    w(f"{name}@{CHAMPION} -> {target}", client.set_registered_model_alias, name, CHAMPION, target)
    _finish(client, name, intent, w)
    return Decision(
        "rolled_back",
        target,
        current,
        f"rolled back: champion is v{target} again" + (f", previous-champion v{older}" if older else ""),
        repaired=repaired,
    )


def status(client: MlflowClient, name: str, history: int = 10) -> dict[str, Any]:
    """Aliases of the pair and its encoder, the gate results, the audit trail, and warnings."""
    held = aliases(client, name)
    if held is None:
        raise TrackingError(f"registered model {name!r} does not exist; run the pipeline (`dvc repro`) first")
    tags = model_tags(client, name)
    warnings = []
    intent = _read_intent(tags)
    if intent is not None:
        warnings.append(
            f"an interrupted {intent.get('kind')} to v{intent.get('to')} ({intent.get('at')}) is pending; "
            "the next `aepipe promote` or `aepipe rollback` finishes or drops it"
        )
    moved = outside_move(client, name, held, tags)
    if moved:
        warnings.append(moved)
    enc_held = aliases(client, encoder_name(name)) or {}
    for alias in (CHAMPION, PREVIOUS):
        want = _encoder_version(client, name, held.get(alias))
        if want and enc_held.get(alias) != want and intent is None:
            warnings.append(
                f"{encoder_name(name)}@{alias} is {enc_held.get(alias)} but {name}@{alias}'s encoder is "
                f"v{want}"
            )
    versions = []
    try:
        found = client.search_model_versions(f"name='{name}'")
    except Exception as exc:
        raise registry_error(f"listing the versions of {name!r}", exc) from None
    for v in sorted(found, key=lambda v: int(v.version), reverse=True)[:history]:
        t = v.tags
        versions.append(
            {
                "version": str(v.version),
                "aliases": sorted(a for a, n in held.items() if n == str(v.version)),
                "registration": t.get(registry.STATE_TAG, "complete"),
                "source_run": t.get("aepipe.source_run_id"),
                "variant": t.get("aepipe.variant"),
                "head": t.get("aepipe.head"),
                "labels_used": t.get("aepipe.labels_used"),
                "val_accuracy": t.get("aepipe.val_accuracy"),
                "test_accuracy": t.get("aepipe.test_accuracy"),
                "gate": {
                    k.removeprefix("aepipe.gate."): val
                    for k, val in t.items()
                    if k.startswith("aepipe.gate.")
                }
                or None,
                "audit": {
                    k.removeprefix("aepipe."): val
                    for k, val in t.items()
                    if k.startswith(("aepipe.promot", "aepipe.demoted", "aepipe.restored", "aepipe.rolled"))
                    or k == "aepipe.previous_champion"
                }
                or None,
            }
        )
    return {
        "model": name,
        "aliases": held,
        "encoder_aliases": enc_held,
        "last_registration": registry.last_registration(client, name),
        "warnings": warnings,
        "versions": versions,
    }
