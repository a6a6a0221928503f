"""Crash safety for real: SIGKILL the CLI after a checkpoint, re-run it, get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aepipe.config import parse_params
from aepipe.stages import extract, prepare, pretrain

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def cli_env(checkpoints: Path) -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "AEPIPE_CHECKPOINT_DIR": str(checkpoints),
        "AEPIPE_PROGRESS": "0",
        "MLFLOW_TRACKING_URI": f"sqlite:///{checkpoints.parent / 'mlflow.db'}",
    }


def run_cli(
    args: list[str], root: Path, kill_after_checkpoint: bool = False
) -> subprocess.CompletedProcess | None:
    """Run ``aepipe ...``; with ``kill_after_checkpoint``, SIGKILL it as soon as its first
    checkpoint file appears and return None."""
    checkpoints = root / "checkpoints"
    cmd = [sys.executable, "-m", "aepipe.cli", "--params", str(root / "params.yaml"), *args]
    if not kill_after_checkpoint:
        return subprocess.run(
            cmd, env=cli_env(checkpoints), cwd=root, capture_output=True, text=True, check=True, timeout=600
        )
    proc = subprocess.Popen(
        cmd, env=cli_env(checkpoints), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("*/last.pt")):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return None


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    prepare.run(parse_params({}), root / "data")
    return root


def setup_run(base: Path, name: str, params: dict) -> Path:
    root = base / name
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_killed_pretraining_resumes_to_the_uninterrupted_result(digits: Path) -> None:
    params = {"pretrain": {"epochs": 8}, "model": {"width": 4}, "device": "cpu"}
    args = [
        "pretrain",
        "--data",
        str(digits / "data"),
        "--model",
        "ae",
        "--metrics",
        "pretrain.json",
        "--plots",
        "plots",
    ]
    straight = setup_run(digits, "pretrain-straight", params)
    run_cli(args, straight)
    killed = setup_run(digits, "pretrain-killed", params)
    run_cli(args, killed, kill_after_checkpoint=True)
    assert not (killed / "pretrain.json").exists() and list((killed / "checkpoints").glob("*/last.pt"))
    start = time.perf_counter()
    result = json.loads(run_cli([*args, "--json"], killed).stdout)
    print(
        f"resumed pretraining from epoch {result['resumed_from_epoch']} in {time.perf_counter() - start:.1f} "
        "s"
    )
    assert result["resumed_from_epoch"] >= 1
    expected = json.loads((straight / "pretrain.json").read_text())
    got = json.loads((killed / "pretrain.json").read_text())
    assert (got["final_train_loss"], got["final_val_loss"]) == (
        expected["final_train_loss"],
        expected["final_val_loss"],
    )
    assert (killed / "plots/pretrain_loss.csv").read_text() == (
        straight / "plots/pretrain_loss.csv"
    ).read_text()
    a, b = weights(straight / "ae/weights.pt"), weights(killed / "ae/weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any((killed / "checkpoints").iterdir())  # removed once the outputs were written


def test_killed_finetuning_resumes_to_the_uninterrupted_result(digits: Path) -> None:
    params = parse_params({"pretrain": {"epochs": 1}, "model": {"width": 4}, "device": "cpu"})
    pretrain.run(params, digits / "data", digits / "ae", digits / "p.json", digits / "plots")
    extract.run(params, digits / "data", digits / "ae", digits / "features")
    head = {
        "classifier": {"head": "finetune", "finetune": {"max_epochs": 6, "patience": 6, "augment": True}},
        "model": {"width": 4},
        "device": "cpu",
    }
    args = [
        "train",
        "--data",
        str(digits / "data"),
        "--features",
        str(digits / "features"),
        "--model",
        str(digits / "ae"),
        "--out",
        "clf",
        "--metrics",
        "train.json",
        "--plots",
        "plots",
    ]
    straight = setup_run(digits, "train-straight", head)
    run_cli(args, straight)
    killed = setup_run(digits, "train-killed", head)
    run_cli(args, killed, kill_after_checkpoint=True)
    assert not (killed / "train.json").exists()
    result = json.loads(run_cli([*args, "--json"], killed).stdout)
    assert result["resumed_from_epoch"] >= 1
    assert (killed / "train.json").read_text() == (straight / "train.json").read_text()
    assert (killed / "plots/train_curve.csv").read_text() == (straight / "plots/train_curve.csv").read_text()
    for part in ("clf/weights.pt", "clf/autoencoder/weights.pt"):
        a, b = weights(straight / part), weights(killed / part)
        assert all(torch.equal(a[k], b[k]) for k in a), part


class Killed(Exception):
    """Stands in for a SIGKILL right after a checkpoint file is written."""


def test_a_train_checkpoint_is_resumed_only_by_the_encoder_spec_and_features_it_was_written_for(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.pool_grid`` changes extraction, not the pretrained weights: the same weights.pt
    with another spec.json gives features of another width. A head checkpoint left by a killed
    ``train`` is resumed only with the spec and the feature width it was written for."""
    from aepipe.stages import train
    from aepipe.training.checkpoint import Checkpointer

    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setenv("AEPIPE_CHECKPOINT_DIR", str(checkpoints))
    params = parse_params(
        {
            "pretrain": {"epochs": 1},
            "model": {"name": "conv", "width": 4, "pool_grid": 1},
            "classifier": {"head": "mlp", "mlp": {"max_epochs": 3, "patience": 3}},
            "device": "cpu",
        }
    )
    data, ae = digits / "data", tmp_path / "ae"
    pretrain.run(params, data, ae, tmp_path / "pretrain.json", tmp_path / "plots")
    extract.run(params, data, ae, tmp_path / "grid1")
    grid1 = (ae / "spec.json").read_text()
    grid2 = json.dumps({**json.loads(grid1), "pool_grid": 2})
    (ae / "spec.json").write_text(grid2)
    extract.run(params, data, ae, tmp_path / "grid2")
    assert np.load(tmp_path / "grid1/val.npy").shape[1] < np.load(tmp_path / "grid2/val.npy").shape[1]

    def train_on(features: str) -> dict:
        out = tmp_path / f"train-{features}"
        return train.run(
            params, data, tmp_path / features, ae, out / "clf", out / "train.json", out / "plots"
        )

    save = Checkpointer.save

    def save_then_die(self: Checkpointer, state: dict) -> None:
        save(self, state)
        raise Killed

    (ae / "spec.json").write_text(grid1)
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_die)
        with pytest.raises(Killed):
            train_on("grid1")
    left = list(checkpoints.glob("*/last.pt"))
    assert len(left) == 1  # what the killed run left after its first epoch

    (ae / "spec.json").write_text(grid2)  # weights.pt unchanged, byte for byte
    assert train_on("grid2")["resumed_from_epoch"] == 0
    (ae / "spec.json").write_text(grid1)
    assert train_on("grid2")["resumed_from_epoch"] == 0  # same model dir, features of another width
    assert list(checkpoints.glob("*/last.pt")) == left  # fresh runs neither used nor removed it
    assert train_on("grid1")["resumed_from_epoch"] == 1  # the run it was written for resumes
    assert not list(checkpoints.glob("*/last.pt"))


def test_checkpoints_go_where_the_readme_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AEPIPE_CHECKPOINT_DIR when set; else .aepipe/checkpoints in a writable working directory
    (a checkout); else, as in the component image whose working directory is read-only for its
    user, $XDG_CACHE_HOME/aepipe/checkpoints (~/.cache when unset)."""
    from aepipe.training import checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AEPIPE_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    assert checkpoint.checkpoint_dir("train", 1).parent == tmp_path / "elsewhere"
    monkeypatch.delenv("AEPIPE_CHECKPOINT_DIR")
    assert checkpoint.checkpoint_dir("train", 1).parent == Path(".aepipe/checkpoints")

    # read-only working directory (os.access, since CI runs as root and chmod would not stop it)
    monkeypatch.setattr(checkpoint.os, "access", lambda path, mode: Path(path) != tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert checkpoint.checkpoint_root() == tmp_path / "cache" / "aepipe" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert checkpoint.checkpoint_root() == tmp_path / "home" / ".cache" / "aepipe" / "checkpoints"
