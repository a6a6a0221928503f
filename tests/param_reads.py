"""Which params a stage reads: every field of a Params tree that code touches while it runs.

``recorded_reads(params)`` patches ``__getattribute__`` of the config classes for the duration,
and records the dotted key (``classifier.semisup.augment.cutout``) of each field read on an
object of that tree. A section's options dict (``model.<variant>``, read through
``ModelConfig.options``) counts as a read of the section. Dumps (``model_dump``, ``flat``) are not
reads: stages dump params only to log them and to key checkpoints, and every value that steers
what a stage computes is a field read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

# attributes through which a section's undeclared (extra) keys are read
EXTRA_ATTRS = ("model_extra", "__pydantic_extra__")


def _tree(params: BaseModel) -> tuple[dict[int, str], dict[type, set[str]]]:
    by_id: dict[int, str] = {}
    by_class: dict[type, set[str]] = {}

    def walk(obj: BaseModel, path: str) -> None:
        by_id[id(obj)] = path
        by_class.setdefault(type(obj), set()).add(path)
        for name in type(obj).model_fields:
            value = obj.__dict__[name]
            if isinstance(value, BaseModel):
                walk(value, f"{path}.{name}" if path else name)

    walk(params, "")
    return by_id, by_class


@contextlib.contextmanager
def recorded_reads(params: BaseModel) -> Iterator[set[str]]:
    """Yield a set that fills with the dotted keys read while the block runs. An object of the
    tree that code rebuilt (``model_copy``) is traced by its class when only one path has it."""
    by_id, by_class = _tree(params)
    reads: set[str] = set()
    originals = {cls: cls.__dict__.get("__getattribute__") for cls in by_class}

    def path_of(obj: Any) -> str | None:
        path = by_id.get(id(obj))
        if path is None:
            paths = by_class.get(type(obj), set())
            path = next(iter(paths)) if len(paths) == 1 else None
        return path

    def getattribute(self: Any, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name in type(self).model_fields or name in EXTRA_ATTRS:
            path = path_of(self)
            if path is not None:
                key = path if name in EXTRA_ATTRS else (f"{path}.{name}" if path else name)
                if not isinstance(value, BaseModel):  # a section is read when one of its fields is
                    reads.add(key)
        return value

    for cls in by_class:
        cls.__getattribute__ = getattribute  # type: ignore[method-assign]
    try:
        yield reads
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = original  # type: ignore[method-assign]


def covered(key: str, listed: list[str]) -> bool:
    """A dvc.yaml params entry covers its own key and every key below it."""
    return any(key == entry or key.startswith(entry + ".") for entry in listed)
