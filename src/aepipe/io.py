"""Crash-safe file writing: write next to the target, then rename over it.

A reader (DVC, KFP, a reviewer) therefore sees either the old file or the complete new one,
never a half-written file, and a crash mid-write leaves what was there untouched.

A writer killed outright (SIGKILL, OOM killer, a preempted pod) cannot clean up, so its temp
names carry its pid: ``.<target>.<pid>.<random>.tmp``. The next write of the same target (and
every stage command, for its outputs, before it starts: :func:`sweep_leftovers`) removes the
temps of writers that no longer run, and puts back a directory a kill caught between its two
renames (``.<target>.old-<pid>``) when the target itself is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_leftovers(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it; return the removed paths.

    A temp without a pid (written by an aepipe older than this scheme) counts as left over.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    name = re.escape(target.name)
    temp = re.compile(rf"\.{name}\.(?:(\d+)\.)?\w+\.tmp(?:\.\w+)?")
    old = re.compile(rf"\.{name}\.old-(\d+)")
    removed = []
    for entry in sorted(parent.iterdir()):
        if match := temp.fullmatch(entry.name):
            pid = match.group(1)
            if pid is not None and _alive(int(pid)):
                continue
        elif match := old.fullmatch(entry.name):
            if _alive(int(match.group(1))):
                continue
            if not target.exists() and not target.is_symlink():
                os.replace(entry, target)  # killed between the two renames: the old one is whole
                continue
        else:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; on success rename it onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp" + suffix, dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` as a whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    from aepipe.errors import AepipeError

    path = Path(path)
    if not path.is_file():
        raise AepipeError(f"{path}: {what} not found; run the stage that produces it first")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AepipeError(
            f"{path}: {what} is not valid JSON ({exc}); re-run the stage that writes it"
        ) from exc


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_csv(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """CSV with a header from the first row's keys (the form `dvc plots` reads); rows may be a
    generator, written as they come."""
    import csv

    rows = iter(rows)
    first = next(rows, None)
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(first) if first else [])
        writer.writeheader()
        if first is not None:
            writer.writerow(first)
            writer.writerows(rows)
