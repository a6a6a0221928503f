"""SIGTERM as an exception, so a stage that is stopped ends cleanly instead of vanishing.

Kubernetes stops a container with SIGTERM (preemption, node drain, a deleted run; ``docker stop``
does the same) and sends SIGKILL when the grace period (30 s by default) is over. Python's
default action for SIGTERM is to die on the spot: no ``finally`` block runs and the stage's
MLflow run stays RUNNING forever. Inside :func:`sigterm_raises` (``stage_run`` enters it around
every stage) SIGTERM raises :class:`Terminated` in the main thread instead: ``stage_run`` marks
the run KILLED and the process exits with status 143, without a traceback.

Code that must not stop half-way through a step (the pretraining loop, between optimiser steps)
runs inside :func:`deferred`: there a SIGTERM only sets a flag that the code polls with
:func:`requested` at points where it can checkpoint and stop consistently. A stop requested
inside a deferred block that the code did not act on is raised when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

EXIT_CODE = 128 + int(signal.SIGTERM)  # 143: what a shell and Kubernetes report for a SIGTERM'd process


class Terminated(SystemExit):
    """SIGTERM arrived. A ``SystemExit``: ``except Exception`` does not swallow it, the CLI returns its
    code (143) and the interpreter exits with it without printing a traceback."""

    def __init__(self) -> None:
        super().__init__(EXIT_CODE)


_state = {"installed": 0, "deferred": 0, "requested": False, "raised": False}


def requested() -> bool:
    """True once SIGTERM has arrived (inside :func:`sigterm_raises`)."""
    return bool(_state["requested"])


def stop() -> None:
    """Raise :class:`Terminated` once (a second SIGTERM does not interrupt the clean-up of the first)."""
    if _state["raised"]:
        return
    _state["raised"] = True
    raise Terminated()


def _on_sigterm(signum: int, frame: Any) -> None:
    first = not _state["requested"]
    _state["requested"] = True
    if first:
        print(
            "aepipe: SIGTERM received: stopping"
            + (" at the next step boundary" if _state["deferred"] else ""),
            file=sys.stderr,
            flush=True,
        )
    if not _state["deferred"]:
        stop()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside this block (main thread only; elsewhere a no-op,
    since Python delivers signals to the main thread alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _state["installed"] == 0
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if outermost else None
    if outermost:
        _state.update(requested=False, raised=False)
    _state["installed"] += 1
    try:
        yield
    finally:
        _state["installed"] -= 1
        if outermost:
            signal.signal(signal.SIGTERM, previous)
            _state.update(requested=False, raised=False)  # a later stage in this process starts afresh


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within: SIGTERM only sets :func:`requested`; poll it and call :func:`stop` where stopping is safe."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
    if _state["requested"] and not _state["deferred"]:
        stop()
