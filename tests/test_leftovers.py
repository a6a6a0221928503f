"""A stage killed outright leaves temp files behind; the next run removes them (and only theirs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aepipe.config import parse_params
from aepipe.io import atomic_dir, sweep_leftovers, write_json
from aepipe.stages import prepare, pretrain

DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process


def test_sweep_removes_dead_writers_temps_and_keeps_live_ones(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    dead_dir = tmp_path / f".features.{DEAD_PID}.ab12cd34.tmp"
    dead_dir.mkdir()
    (dead_dir / "train.npy").write_bytes(b"partial")
    legacy = tmp_path / ".features.x9y8z7w6.tmp"  # an older aepipe: no pid in the name
    legacy.mkdir()
    live = tmp_path / f".features.{os.getpid()}.qq.tmp"
    live.mkdir()
    other = tmp_path / f".features2.{DEAD_PID}.ab.tmp"  # another target's temp
    other.mkdir()
    dead_file = tmp_path / f".eval.json.{DEAD_PID}.k3.tmp.json"
    dead_file.write_text("{")

    assert sorted(sweep_leftovers(tmp_path / "features")) == sorted([dead_dir, legacy])
    assert live.is_dir() and other.is_dir() and (tmp_path / "features").is_dir()
    write_json(tmp_path / "eval.json", {"a": 1})  # the next write of a target sweeps too
    assert not dead_file.exists()


def test_a_directory_caught_between_its_two_renames_is_put_back(tmp_path: Path) -> None:
    old = tmp_path / f".prepared.old-{DEAD_PID}"
    old.mkdir()
    (old / "x.npy").write_bytes(b"whole")
    with atomic_dir(tmp_path / "prepared") as tmp:  # sweeps first: the old copy comes back...
        assert (tmp_path / "prepared" / "x.npy").read_bytes() == b"whole"
        (tmp / "x.npy").write_bytes(b"new")
    assert (tmp_path / "prepared" / "x.npy").read_bytes() == b"new"  # ...then is replaced
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


@pytest.mark.slow
def test_sigkill_during_extract_then_the_next_run_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aepipe.cli import main

    # batches of one image: extraction lasts long enough (seconds) to be caught with its temp dir open,
    # also on a quiet machine (with batches of 8 a quiet CI machine finished within the 0.3 s wait)
    params_text = "model:\n  name: conv\n  width: 4\npretrain:\n  epochs: 1\nevaluate:\n  batch_size: 1\n"
    (tmp_path / "params.yaml").write_text(params_text)
    params = parse_params({"model": {"name": "conv", "width": 4}, "pretrain": {"epochs": 1}})
    prepare.run(params, tmp_path / "data")
    pretrain.run(params, tmp_path / "data", tmp_path / "ae", tmp_path / "pretrain.json", tmp_path / "plots")
    cmd = [
        str(Path(sys.executable).with_name("aepipe")),
        "--params",
        "params.yaml",
        "extract",
        "--data",
        "data",
        "--model",
        "ae",
        "--out",
        "features",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "AEPIPE_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    temps: list[Path] = []
    while not temps and proc.poll() is None and time.monotonic() < deadline:
        temps = list(tmp_path.glob(".features.*.tmp"))
        time.sleep(0.005)
    assert temps, f"extract ended before its temp dir showed up: {proc.stderr.read().decode()[-2000:]}"
    time.sleep(0.05)  # let it write into the temp dir (batches of one image: it lasts seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert temps[0].is_dir() and not (tmp_path / "features").exists()  # what the kill left

    monkeypatch.chdir(tmp_path)  # the next run, in this process (a second interpreter costs seconds)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    assert main(cmd[1:]) == 0
    assert not list(tmp_path.glob(".features.*")), list(tmp_path.iterdir())
    features = np.load(tmp_path / "features" / "test.npy")
    assert features.shape[0] == 360 and np.isfinite(features).all()
