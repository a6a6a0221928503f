"""README promises that had no test: limits the README states, each checked on the real function.

- Only pretrain runs under torchrun; every other stage refuses before it touches MLflow or a file
  (README "Several GPUs or nodes (DDP)").
- ``pretrain.data_mode: auto`` counts the cgroup memory limit (README "The training loop").
- An ``.npz`` integer image array of another dtype than uint8 is taken when its values lie in
  0..255 and refused otherwise (README "Your own data").
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.config import DataConfig, parse_params
from aepipe.data.sources import load_source
from aepipe.errors import AepipeError, DataError
from aepipe.paths import STAGE_ARGS
from aepipe.stages.runner import run_stage
from aepipe.training import device as dev
from tests.conftest import toy_images, write_npz

CPU = torch.device("cpu")

# --- Under torchrun only pretrain runs --------------------------------------------------------


def _closed_port() -> int:
    """A local port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def torchrun_rank0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rank 0 of a 2-process torchrun job, run from an empty directory, with MLflow pointed at a
    closed port: any attempt to reach the tracking server fails with a TrackingError of its own."""
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _stage_paths(stage: str, root: Path) -> dict[str, str]:
    """The stage's run() keywords with its default paths, under ``root``."""
    return {kw: str(root / default) for kw, default in STAGE_ARGS[stage].values()}


@pytest.mark.parametrize("stage", ["prepare", "extract", "train", "evaluate", "register"])
def test_stages_other_than_pretrain_refuse_torchrun_before_mlflow_or_files(
    stage: str, torchrun_rank0: Path, tmp_path: Path
) -> None:
    with pytest.raises(AepipeError) as info:
        run_stage(stage, parse_params({}), **_stage_paths(stage, torchrun_rank0))
    message = str(info.value)
    assert f"`aepipe {stage}` does not run under torchrun" in message, message
    assert "WORLD_SIZE=2" in message and "only pretrain" in message, message
    assert "unreachable" not in message  # the closed tracking server was never asked
    assert sorted(tmp_path.rglob("*")) == [torchrun_rank0], "a file was created"


def test_pretrain_is_not_refused_under_torchrun(torchrun_rank0: Path) -> None:
    """The control: pretrain passes the torchrun check and goes on to MLflow, which is the closed
    port here (so the refusals above, whose message differs, did stop before MLflow)."""
    with pytest.raises(AepipeError, match="unreachable") as info:
        run_stage("pretrain", parse_params({}), **_stage_paths("pretrain", torchrun_rank0))
    assert "torchrun" not in str(info.value)


# --- data_mode: auto counts the cgroup memory limit ---------------------------------------------

HOST = 8 * 2**30  # MemAvailable, pinned so the arithmetic is exact


def _cgroup(root: Path, memory_max: str | None, memory_current: str | None = "0") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in {"memory.max": memory_max, "memory.current": memory_current}.items():
        if text is not None:
            (root / name).write_text(text + "\n")
    return root


@pytest.fixture
def host_8g(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(dev, "_meminfo_available", lambda: HOST)
    return HOST


def test_cgroup_memory_limit_caps_the_host_memory(tmp_path: Path, host_8g: int) -> None:
    gib, mib = 2**30, 2**20
    # a pod limited to 2 GiB that already uses 512 MiB has 1.5 GiB left, whatever the node has free
    assert dev.available_memory(CPU, _cgroup(tmp_path / "pod", str(2 * gib), str(512 * mib))) == 1536 * mib
    # a limit above what the host has free: the host's figure
    assert dev.available_memory(CPU, _cgroup(tmp_path / "big", str(64 * gib), str(mib))) == host_8g
    # over the limit already (page cache counts): nothing left, never negative
    assert dev.available_memory(CPU, _cgroup(tmp_path / "over", str(gib), str(2 * gib))) == 0


@pytest.mark.parametrize(
    ("memory_max", "memory_current"),
    [
        ("max", "123456"),  # no limit
        (None, None),  # no memory controller files (cgroup v1, the root cgroup, not Linux)
        ("lots", "0"),  # garbage limit
        ("1048576", "some"),  # garbage usage
        ("", "0"),  # empty file
    ],
    ids=["max", "missing", "garbage-max", "garbage-current", "empty"],
)
def test_no_usable_cgroup_limit_falls_back_to_host_memory(
    memory_max: str | None, memory_current: str | None, tmp_path: Path, host_8g: int
) -> None:
    assert dev.available_memory(CPU, _cgroup(tmp_path, memory_max, memory_current)) == host_8g


def test_cgroup_v1_memory_limit_caps_the_host_memory(tmp_path: Path, host_8g: int) -> None:
    """Nodes that still mount cgroup v1: memory/memory.limit_in_bytes and memory.usage_in_bytes."""
    gib, mib = 2**30, 2**20

    def v1(root: Path, limit: int, usage: int) -> Path:
        (root / "memory").mkdir(parents=True)
        (root / "memory/memory.limit_in_bytes").write_text(f"{limit}\n")
        (root / "memory/memory.usage_in_bytes").write_text(f"{usage}\n")
        return root

    assert dev.available_memory(CPU, v1(tmp_path / "pod", 2 * gib, 512 * mib)) == 1536 * mib
    # v1's "no limit" is a page-rounded 2**63 - 1: the host's figure
    assert dev.available_memory(CPU, v1(tmp_path / "none", 9223372036854771712, mib)) == host_8g
    # a v2 file wins where both are mounted (the unified hierarchy is the one in force)
    both = v1(tmp_path / "both", 2 * gib, 0)
    _cgroup(both, "max", "0")
    assert dev.available_memory(CPU, both) == host_8g


def test_missing_cgroup_directory_falls_back_to_host_memory(tmp_path: Path, host_8g: int) -> None:
    assert dev.available_memory(CPU, tmp_path / "no-such-dir") == host_8g


def test_cgroup_limit_wins_over_the_real_host_memory(tmp_path: Path) -> None:
    """Unpinned: the real MemAvailable of this machine is far above a 4 MiB limit."""
    assert dev.available_memory(CPU, _cgroup(tmp_path, str(4 * 2**20), str(2**20))) == 3 * 2**20


# --- .npz integer images of another dtype: 0..255 only -----------------------------------------


def _npz_source(path: Path) -> DataConfig:
    return parse_params({"data": {"source": f"npz:{path}"}}).data


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.int64])
def test_npz_integer_images_in_0_255_are_taken_as_uint8(dtype: type, tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=4, classes=2)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255  # both ends of the range
    wide = x.astype(dtype)
    assert wide.dtype != np.uint8
    reference = load_source(_npz_source(write_npz(tmp_path / "u8.npz", x=x, y=y)))
    raw = load_source(_npz_source(write_npz(tmp_path / "wide.npz", x=wide, y=y)))
    assert raw.x.dtype == np.uint8
    np.testing.assert_array_equal(raw.x, reference.x)
    np.testing.assert_array_equal(raw.x, x)


@pytest.mark.parametrize(("bad", "shown"), [(300, "..300;"), (-1, "-1..")], ids=["300", "minus-1"])
@pytest.mark.parametrize("key", ["x", "x_train", "x_test"])
def test_npz_integer_images_outside_0_255_are_refused(bad: int, shown: str, key: str, tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=4, classes=2)
    wide = x.astype(np.int16)
    wide[1, 0, 2, 3] = bad
    arrays = (
        {"x": wide, "y": y}
        if key == "x"
        else {
            "x_train": x if key == "x_test" else wide,
            "y_train": y,
            "x_test": wide if key == "x_test" else x,
            "y_test": y,
        }
    )
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_source(_npz_source(path))
    message = str(info.value)
    assert f"{path}: {key} is int16 with values " in message, message
    assert shown in message and "0..255" in message, message
