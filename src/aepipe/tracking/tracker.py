"""What a stage may record, independent of where it goes.

Stage functions take a ``Tracker``; the CLI and the KFP components pass an MLflow-backed one,
unit tests the ``NullTracker``. Stage code never imports mlflow itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aepipe.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...


class NullTracker:
    """Records nothing; for tests and for running a stage without MLflow."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass


class MlflowTracker:
    """Logs to one MLflow run through the client (no global active-run state)."""

    # set on stage runs by lineage.stage_run: the execution's parent run and its experiment
    parent_run_id: str
    experiment_id: str

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; a failure of the server, the network or the artifact store
        becomes a TrackingError naming what was being logged (the CLI then ends the message with
        what happened to each output), never a traceback from inside the client."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(
                f"MLflow failed while logging {what} to run {self.run_id}: {first}. Check that the "
                "tracking server (and its artifact store) is reachable, then run the stage again: it "
                "resumes from its last checkpoint"
            ) from None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _short(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            batch = items[start : start + 100]
            self._call("params", self.client.log_batch, self.run_id, params=batch, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            batch = items[start : start + 500]
            self._call("metrics", self.client.log_batch, self.run_id, metrics=batch, synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._call(f"artifacts {path}", self.client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.is_file():
            self._call(f"artifact {path}", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._call(f"tag {k}", self.client.set_tag, self.run_id, k, v)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
