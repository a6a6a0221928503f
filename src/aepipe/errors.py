"""The project's own error types.

Every message a user sees names the file or key at fault and how to fix it. The CLI prints
``AepipeError`` messages without a traceback; anything else is a bug and keeps its traceback.
"""


class AepipeError(Exception):
    """Base class: a problem the user can fix (bad params, bad data, unreachable server)."""


class ConfigError(AepipeError):
    """params.yaml (or an override) is invalid."""


class DataError(AepipeError):
    """A dataset source or a prepared dataset is unusable."""


class ModelError(AepipeError):
    """A saved model is missing, inconsistent, or training diverged."""


class TrackingError(AepipeError):
    """The MLflow server or registry cannot do what was asked."""
