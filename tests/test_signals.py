"""SIGTERM (Kubernetes preemption, ``docker stop``): the stage stops cleanly and can resume.

In process: a real SIGTERM (``os.kill`` on this process) sent from inside a training step makes
the pretraining loop checkpoint at the next step and raise ``Terminated``; resuming from that
checkpoint ends bit for bit where an uninterrupted run ends (resident and streamed data, a variant
that draws extra labelled rows and one that draws noise). Through the CLI: ``aepipe pretrain``
stopped by SIGTERM exits 143 and its MLflow run is KILLED, not RUNNING. The container version
of the latter is in ``tests/test_docker.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from aepipe import signals
from aepipe.config import PretrainConfig, load_params
from aepipe.data.blockio import NpyRows
from aepipe.training.checkpoint import Checkpointer
from aepipe.training.pretrain import pretrain
from tests.test_loop import CPU, spec, toy

REPO = Path(__file__).resolve().parents[1]


def sigterm_at_step(model: torch.nn.Module, step: int) -> None:
    """Send this process SIGTERM from inside the ``step``-th training step (its loss call)."""
    real, calls = model.loss, [0]

    def loss(x, out, labels=None):
        if model.training:
            calls[0] += 1
            if calls[0] == step:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(x, out, labels)

    model.loss = loss


def fresh(name: str, **options: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, **options)


def build(name: str, **options: Any) -> torch.nn.Module:
    from aepipe.models import build_autoencoder

    return build_autoencoder(spec(name, **options))


CASES = {
    "denoising-memory": ("denoising", {}, "memory"),  # noise from the global RNG every step
    "vae_joint-memory": ("vae_joint", {"labelled_per_batch": 4}, "memory"),  # extra labelled draws
    "conv-stream": ("conv", {}, "stream"),  # batches from x.npy, shuffled buffer by buffer
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigterm_mid_epoch_checkpoints_and_the_resumed_run_ends_bit_for_bit_the_same(
    case: str, tmp_path: Path
) -> None:
    name, options, mode = CASES[case]
    x = toy(203)
    np.save(tmp_path / "x.npy", x)
    y = np.where(np.arange(203) % 5 == 0, np.arange(203) % 3, -1)  # a few labelled rows
    train = NpyRows(tmp_path / "x.npy") if mode == "stream" else x
    cfg = PretrainConfig(epochs=3, batch_size=16, data_mode=mode, stream_buffer_mb=8)
    labels = {"y_train": y, "y_val": y[:30]} if name == "vae_joint" else {}

    straight = fresh(name, **options)
    expected = pretrain(straight, train, x[:30], cfg, torch.Generator().manual_seed(0), CPU, **labels)

    steps = -(-203 // 16)  # 13 per epoch: SIGTERM in step 5 of epoch 2
    stopped = fresh(name, **options)
    sigterm_at_step(stopped, steps + 5)
    ckpt = Checkpointer(tmp_path / "ckpt")
    with signals.sigterm_raises(), pytest.raises(signals.Terminated) as stop:
        pretrain(
            stopped, train, x[:30], cfg, torch.Generator().manual_seed(0), CPU, checkpoint=ckpt, **labels
        )
    assert stop.value.code == 143
    state = ckpt.load()
    assert (
        state["epoch"] == 1 and state["partial"]["step"] == 5
    )  # the 5th step finished; stopped before the 6th

    resumed = build(name, **options)
    torch.manual_seed(12345)  # the checkpoint restores every RNG, whatever the process did before
    history = pretrain(
        resumed, train, x[:30], cfg, torch.Generator().manual_seed(99), CPU, checkpoint=ckpt, **labels
    )
    assert [(h.train_loss, h.val_loss) for h in history] == [(h.train_loss, h.val_loss) for h in expected]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_sigterm_outside_the_loop_raises_at_once_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Terminated), signals.sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # never reached: the handler raises in this thread as soon as it runs
    assert signal.getsignal(signal.SIGTERM) is before
    assert not signals.requested()  # the next stage in this process is not stopped by the old signal


def test_a_stop_requested_in_a_deferred_block_is_raised_when_it_ends() -> None:
    with pytest.raises(signals.Terminated), signals.sigterm_raises():
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert signals.requested()
        pytest.fail("the deferred block should have raised")


@pytest.mark.slow
def test_aepipe_pretrain_stopped_by_sigterm_exits_143_and_its_mlflow_run_is_killed(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    params = load_params(REPO / "params.yaml").model_dump(mode="json")
    params["pretrain"].update(epochs=40, batch_size=8)
    params["model"].update(name="conv", width=4)
    params["mlflow"].update(experiment="sigterm", model_name="sigterm")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "AEPIPE_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "OMP_NUM_THREADS": "1",
    }
    aepipe = str(Path(sys.executable).with_name("aepipe"))
    subprocess.run([aepipe, "prepare"], cwd=tmp_path, env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [aepipe, "pretrain"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "ckpt").glob("pretrain-*/last.pt")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM received" in err and "Traceback" not in err
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("sigterm")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`aepipe.stage` = 'pretrain'")
    assert run.info.status == "KILLED"
    (ckpt,) = (tmp_path / "ckpt").glob("pretrain-*/last.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert 1 <= state["epoch"] < 40
    assert not (tmp_path / "metrics/pretrain.json").exists()  # no outputs from a stopped stage
    assert json.loads(out or "null") is None  # nothing printed as a result
