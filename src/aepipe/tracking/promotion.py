"""Champion promotion and rollback, with MLflow aliases as the only state.

Everything here can also be done by hand in the MLflow UI (move the ``champion`` alias); the CLI
adds the gate (the challenger must beat the champion on the held-out metric by a margin) and
records who promoted what, when and why as tags on the versions.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aepipe.errors import TrackingError

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"


@dataclass
class Decision:
    promoted: bool
    version: str
    previous: str | None
    message: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    return os.environ.get("AEPIPE_USER") or getpass.getuser()


def _version(client: Any, name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:
        return None


def _metric(version: Any, metric: str) -> float | None:
    value = version.tags.get(f"aepipe.{metric}")
    return float(value) if value not in (None, "") else None


def promote(
    client: Any,
    name: str,
    metric: str,
    margin: float,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
) -> Decision:
    if force and not reason:
        raise TrackingError("--force needs --reason TEXT: a forced promotion records why")
    if version is not None:
        try:
            cand = client.get_model_version(name, str(version))
        except Exception:
            raise TrackingError(f"registered model {name!r} has no version {version}") from None
    else:
        cand = _version(client, name, CHALLENGER)
        if cand is None:
            raise TrackingError(
                f"registered model {name!r} has no {CHALLENGER!r} alias; run the pipeline or pass --version N"
            )
    ver = str(cand.version)
    champ = _version(client, name, CHAMPION)
    if champ is not None and str(champ.version) == ver:
        return Decision(False, ver, None, f"version {ver} is already the champion")

    value = _metric(cand, metric)
    gate = "no champion yet"
    if champ is not None:
        champ_value = _metric(champ, metric)
        same_data = cand.tags.get("aepipe.data_hash") == champ.tags.get("aepipe.data_hash")
        if value is None or champ_value is None:
            gate = f"{metric} missing (challenger {value}, champion {champ_value})"
            ok = False
        elif not same_data:
            gate = f"evaluated on different data (challenger {cand.tags.get('aepipe.data_hash', '?')[:12]}, champion {champ.tags.get('aepipe.data_hash', '?')[:12]})"
            ok = False
        else:
            ok = value > champ_value and value - champ_value >= margin
            gate = f"{metric}: challenger v{ver} {value:.4f} vs champion v{champ.version} {champ_value:.4f} (margin {margin:.4f})"
        if not ok and not force:
            return Decision(
                False, ver, str(champ.version), f"refused: {gate}; use --force --reason TEXT to override"
            )

    when = _now()
    tags = {
        "aepipe.promoted_at": when,
        "aepipe.promoted_by": _user(),
        "aepipe.promotion_gate": gate,
        "aepipe.promotion_forced": str(bool(force)).lower(),
        "aepipe.promotion_reason": reason or "passed the gate",
    }
    if champ is not None:
        tags["aepipe.previous_champion"] = str(champ.version)
        client.set_registered_model_alias(name, PREVIOUS, str(champ.version))
        client.set_model_version_tag(name, str(champ.version), "aepipe.demoted_at", when)
    for key, value_ in tags.items():
        client.set_model_version_tag(name, ver, key, value_)
    client.set_registered_model_alias(name, CHAMPION, ver)
    challenger = _version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == ver:
        client.delete_registered_model_alias(name, CHALLENGER)
    prev = str(champ.version) if champ is not None else None
    return Decision(
        True, ver, prev, f"promoted v{ver} to {CHAMPION}" + (f" (forced: {reason})" if force else f"; {gate}")
    )


def rollback(client: Any, name: str, reason: str | None = None) -> Decision:
    """Give ``champion`` back to ``previous-champion``; walk one step further back in the history."""
    prev = _version(client, name, PREVIOUS)
    if prev is None:
        raise TrackingError(f"registered model {name!r} has no {PREVIOUS!r} alias: nothing to roll back to")
    current = _version(client, name, CHAMPION)
    when = _now()
    client.set_registered_model_alias(name, CHAMPION, str(prev.version))
    client.set_model_version_tag(name, str(prev.version), "aepipe.restored_at", when)
    client.set_model_version_tag(name, str(prev.version), "aepipe.restored_by", _user())
    if current is not None:
        client.set_model_version_tag(name, str(current.version), "aepipe.rolled_back_at", when)
        client.set_model_version_tag(
            name, str(current.version), "aepipe.rollback_reason", reason or "rollback"
        )
    older = prev.tags.get("aepipe.previous_champion")
    if older:
        client.set_registered_model_alias(name, PREVIOUS, older)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    return Decision(
        True,
        str(prev.version),
        str(current.version) if current else None,
        f"rolled back: champion is v{prev.version} again",
    )
