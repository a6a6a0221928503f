"""Data-parallel pretraining with 2 CPU processes (torchrun, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aepipe.config import parse_params
from aepipe.stages import prepare

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def env(tmp_path: Path) -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "AEPIPE_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
        "AEPIPE_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


def worker(tmp_path: Path, kind: str, ranks: int) -> dict:
    out = tmp_path / f"{kind}-{ranks}.pt"
    launcher = TORCHRUN if ranks == 2 else [sys.executable]
    subprocess.run(
        [*launcher, str(REPO / "tests/ddp_worker.py"), str(out), kind],
        env=env(tmp_path),
        check=True,
        capture_output=True,
        timeout=600,
    )
    return torch.load(out, weights_only=True)


def test_two_ranks_reproduce_one_process_for_the_same_global_batch(tmp_path: Path) -> None:
    """A model without BatchNorm: every op is per sample, so 2 ranks x half batches with averaged
    gradients are one process up to float summation order (uneven last batch included)."""
    one, two = worker(tmp_path, "plain", 1), worker(tmp_path, "plain", 2)
    assert len(one["train"]) == len(two["train"]) == 3
    for key in ("train", "val"):
        torch.testing.assert_close(torch.tensor(two[key]), torch.tensor(one[key]), rtol=1e-6, atol=1e-7)
    for key, value in one["state"].items():
        torch.testing.assert_close(two["state"][key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_batchnorm_models_differ_slightly_on_cpu_as_documented(tmp_path: Path) -> None:
    """gloo has no SyncBatchNorm here: each rank normalises with its half batch's statistics."""
    one, two = worker(tmp_path, "conv", 1), worker(tmp_path, "conv", 2)
    assert one["train"] != two["train"]
    torch.testing.assert_close(torch.tensor(two["train"]), torch.tensor(one["train"]), rtol=0.02, atol=0.0)


@pytest.mark.slow
def test_aepipe_pretrain_under_torchrun_writes_outputs_and_mlflow_once(tmp_path: Path) -> None:
    prepare.run(parse_params({}), tmp_path / "data")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"pretrain": {"epochs": 2, "batch_size": 64}, "model": {"width": 4}, "device": "cpu"})
    )
    cmd = [
        *TORCHRUN,
        "-m",
        "aepipe.cli",
        "--params",
        str(tmp_path / "params.yaml"),
        "pretrain",
        "--data",
        str(tmp_path / "data"),
        "--model",
        str(tmp_path / "ae"),
        "--metrics",
        str(tmp_path / "pretrain.json"),
        "--plots",
        str(tmp_path / "plots"),
        "--json",
    ]
    proc = subprocess.run(cmd, env=env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "pretrain.json").read_text())
    assert metrics["epochs"] == 2 and metrics["final_train_loss"] > 0
    assert (tmp_path / "ae/weights.pt").is_file() and (tmp_path / "plots/pretrain_loss.png").is_file()
    assert (
        '"world_size": 2' in proc.stdout and '"rank": 1' in proc.stdout
    )  # rank 0's result, and rank 1's stub

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`aepipe.stage` = 'pretrain'"
    )
    assert len(runs) == 1 and len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == 2


def test_sigterm_under_torchrun_stops_every_rank_at_an_epoch_checkpoint_and_the_rerun_resumes(
    tmp_path: Path,
) -> None:
    """README: under torchrun each rank stops with the last finished epoch's checkpoint (no
    mid-epoch one: the ranks are not stopped at one common step), and a re-run resumes from it."""
    import signal
    import time

    prepare.run(parse_params({}), tmp_path / "data")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"pretrain": {"epochs": 8, "batch_size": 16}, "model": {"width": 4}, "device": "cpu"})
    )
    cmd = [*TORCHRUN, "-m", "aepipe.cli", "--params", str(tmp_path / "params.yaml"), "pretrain"]
    cmd += ["--data", str(tmp_path / "data"), "--model", str(tmp_path / "ae"), "--json"]
    cmd += ["--metrics", str(tmp_path / "pretrain.json"), "--plots", str(tmp_path / "plots")]
    proc = subprocess.Popen(
        cmd, env=env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((tmp_path / "checkpoints").glob("*/*.pt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which forwards it to both ranks
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the ranks did not stop within 120 s of SIGTERM") from None
    assert proc.returncode != 0 and not (tmp_path / "pretrain.json").exists(), err[-3000:]
    (ckpt,) = (tmp_path / "checkpoints").glob("*/*.pt")
    state = torch.load(ckpt, weights_only=True)
    assert "partial" not in state, "a mid-epoch checkpoint under torchrun"
    stopped_after = len(state["history"])
    assert 1 <= stopped_after < 8

    again = subprocess.run(cmd, env=env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    decoder, results, text = json.JSONDecoder(), [], again.stdout
    while "{" in text:  # rank 0's full result and rank 1's stub, in either order
        obj, end = decoder.raw_decode(text[text.index("{") :])
        results.append(obj)
        text = text[text.index("{") + end :]
    (result,) = [r for r in results if "resumed_from_epoch" in r]
    assert result["resumed_from_epoch"] == stopped_after
    assert json.loads((tmp_path / "pretrain.json").read_text())["epochs"] == 8
