"""The pretraining loop: exact CPU equivalence with a plain loop, streaming, divergence, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.config import PretrainConfig
from aepipe.data.blockio import NpyRows
from aepipe.errors import ModelError
from aepipe.models import ModelSpec, build_autoencoder
from aepipe.training import batches
from aepipe.training.batches import DeviceBatches, StreamBatches, choose_mode
from aepipe.training.checkpoint import Checkpointer
from aepipe.training.pretrain import evaluate_loss, pretrain

CPU = torch.device("cpu")


def toy(n: int = 203, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, size, size), dtype=np.uint8)


def spec(name: str = "conv", **options: object) -> ModelSpec:
    return ModelSpec(
        name=name,
        input_shape=(1, 8, 8),
        latent_dim=6,
        width=4,
        depth=2,
        options=dict(options),
        mean=(0.5,),
        std=(0.3,),
        n_classes=3,
    )


def reference_loop(model, x, xv, cfg, generator, y=None, yv=None):
    """Textbook minibatch loop: one permutation per epoch, float batches, Adam + cosine schedule
    (the plain loop the project's must reproduce)."""
    xt, xvt = torch.from_numpy(x), torch.from_numpy(xv)
    yt = torch.from_numpy(y) if y is not None else None
    yvt = torch.from_numpy(yv) if yv is not None else None
    labelled = torch.nonzero(yt >= 0).flatten() if yt is not None and bool((yt < 0).any()) else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    curve = []
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=generator)
        total, seen = torch.zeros(()), 0
        for step in range(math.ceil(len(xt) / cfg.batch_size)):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if labelled is not None and model.labelled_per_batch:
                idx = torch.cat(
                    [
                        idx,
                        labelled[
                            torch.randint(len(labelled), (model.labelled_per_batch,), generator=generator)
                        ],
                    ]
                )
            xb = xt[idx].float().div_(255.0)
            loss, _ = model.loss(xb, model(xb), yt[idx] if yt is not None else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
        sched.step()
        model.eval()
        vtotal, vn = torch.zeros(()), 0
        with torch.no_grad():
            for s in range(0, len(xvt), max(cfg.batch_size, 256)):
                xb = xvt[s : s + max(cfg.batch_size, 256)].float().div_(255.0)
                vloss, _ = model.loss(xb, model(xb), yvt[s : s + len(xb)] if yvt is not None else None)
                vtotal += vloss * len(xb)
                vn += len(xb)
        curve.append((float(total) / seen, float(vtotal) / vn))
    return curve


@pytest.mark.parametrize(
    ("name", "options"), [("conv", {}), ("denoising", {}), ("vae_joint", {"labelled_per_batch": 4})]
)
def test_loop_reproduces_a_plain_reference_loop_exactly_on_cpu(name: str, options: dict) -> None:
    x, xv = toy(), toy(40, seed=1)
    rng = np.random.default_rng(2)
    y = np.where(rng.random(len(x)) < 0.2, rng.integers(0, 3, len(x)), -1) if name == "vae_joint" else None
    yv = rng.integers(0, 3, len(xv)) if name == "vae_joint" else None
    # Pinned: NCHW (channels_last picks other kernels) and the reference's own thread count
    # (threads split reductions differently), whatever FAST_PATHS chooses for the CPU.
    cfg = PretrainConfig(
        epochs=3,
        batch_size=32,
        grad_clip=1.0,
        sync_every=2,
        channels_last=False,
        compile=False,
        threads=torch.get_num_threads(),
    )
    torch.manual_seed(0)
    ref_model = build_autoencoder(spec(name, **options))
    expected = reference_loop(ref_model, x, xv, cfg, torch.Generator().manual_seed(5), y, yv)
    torch.manual_seed(0)
    model = build_autoencoder(spec(name, **options))
    history = pretrain(model, x, xv, cfg, torch.Generator().manual_seed(5), CPU, None, y, yv)
    assert [(h.train_loss, h.val_loss) for h in history] == expected
    for key, value in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_how_often_the_loss_is_read_back_does_not_change_results() -> None:
    x = toy()

    def run(sync_every: int) -> list[float]:
        torch.manual_seed(0)
        cfg = PretrainConfig(epochs=2, batch_size=16, sync_every=sync_every)
        return [
            h.train_loss
            for h in pretrain(
                build_autoencoder(spec()), x, x[:20], cfg, torch.Generator().manual_seed(0), CPU
            )
        ]

    assert run(1) == run(1000)


def row_ids(n: int) -> np.ndarray:
    """Images whose first two pixels spell their row number."""
    x = np.zeros((n, 1, 8, 8), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return x


def decode(xb: torch.Tensor) -> np.ndarray:
    return (xb[:, 0, 0, 0].long() * 256 + xb[:, 0, 0, 1].long()).numpy()


def test_streaming_visits_every_row_once_per_epoch_in_full_shuffled_batches(tmp_path: Path) -> None:
    n = 1000
    np.save(tmp_path / "x.npy", row_ids(n))
    rows = NpyRows(tmp_path / "x.npy", 0, n)
    labels = np.arange(n) % 7
    source = StreamBatches(
        rows, labels, CPU, buffer_bytes=8 * 64 * 64
    )  # blocks of 128 rows, 4 blocks per buffer
    assert source.block_rows < n // 4 and source.blocks_per_buffer > 1
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(2):
        got = [(decode(xb), yb.numpy()) for xb, yb in source.epoch(48, generator)]
        assert [len(ids) for ids, _ in got[:-1]] == [48] * (len(got) - 1) and len(got) == math.ceil(n / 48)
        ids = np.concatenate([i for i, _ in got])
        assert sorted(ids.tolist()) == list(range(n))  # every row exactly once
        assert all((yb == i % 7).all() for i, yb in got)  # labels travel with their rows
        orders.append(ids)
    assert not np.array_equal(orders[0], np.arange(n)) and not np.array_equal(orders[0], orders[1])


def test_stream_and_memory_evaluate_the_same_batches(tmp_path: Path) -> None:
    x = toy(300)
    np.save(tmp_path / "x.npy", x)
    torch.manual_seed(0)
    model = build_autoencoder(spec())
    in_memory = evaluate_loss(model, DeviceBatches(torch.from_numpy(x)), 64)
    streamed = evaluate_loss(
        model, StreamBatches(NpyRows(tmp_path / "x.npy"), None, CPU, buffer_bytes=64 * 100), 64
    )
    assert in_memory == streamed


def test_stream_mode_trains_from_the_file(tmp_path: Path) -> None:
    x = toy(300)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    torch.manual_seed(0)
    cfg = PretrainConfig(epochs=2, batch_size=32, data_mode="stream", stream_buffer_mb=8)
    history = pretrain(
        build_autoencoder(spec()),
        rows,
        NpyRows(tmp_path / "x.npy", 0, 50),
        cfg,
        torch.Generator().manual_seed(0),
        CPU,
    )
    assert len(history) == 2 and all(
        math.isfinite(h.train_loss) and math.isfinite(h.val_loss) for h in history
    )
    assert history[1].train_loss < history[0].train_loss


def test_auto_mode_keeps_data_resident_only_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "available_memory", lambda device: 1000)
    assert choose_mode("auto", 400, CPU) == "memory"
    assert choose_mode("auto", 600, CPU) == "stream"
    assert choose_mode("memory", 10**12, CPU) == "memory" and choose_mode("stream", 1, CPU) == "stream"


class NanAfter(torch.nn.Module):
    """Wraps a model's loss: NaN from the ``after``-th training step on."""

    def __init__(self, model: torch.nn.Module, after: int) -> None:
        super().__init__()
        self.model, self.after, self.calls = model, after, 0
        real = model.loss

        def loss(x, out, labels=None):
            value, parts = real(x, out, labels)
            if model.training:
                self.calls += 1
                if self.calls >= self.after:
                    value = value * float("nan")
            return value, parts

        model.loss = loss


def test_a_non_finite_loss_stops_with_the_epoch_and_step_window_and_keeps_the_checkpoint(
    tmp_path: Path,
) -> None:
    x = toy(160)  # 10 steps of 16 per epoch
    torch.manual_seed(0)
    model = build_autoencoder(spec())
    NanAfter(model, after=15)  # step 5 of epoch 2
    ckpt = Checkpointer(tmp_path / "ckpt")
    cfg = PretrainConfig(epochs=4, batch_size=16, sync_every=4)
    with pytest.raises(ModelError) as err:
        pretrain(model, x, x[:16], cfg, torch.Generator().manual_seed(0), CPU, checkpoint=ckpt)
    text = str(err.value)
    assert (
        "epoch 2, steps 5-8 of 10" in text
        and "nan" in text
        and "pretrain.lr" in text
        and str(ckpt.directory) in text
    )
    assert ckpt.load()["epoch"] == 1  # the last good epoch, not overwritten


def test_resume_from_a_checkpoint_ends_exactly_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    x, cfg = toy(), PretrainConfig(epochs=3, batch_size=32)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_autoencoder(spec("denoising"))  # draws noise from the global RNG every step

    straight = fresh()
    expected = pretrain(straight, x, x[:30], cfg, torch.Generator().manual_seed(0), CPU)

    class Killed(Exception):
        pass

    def die_after_first(log) -> None:
        raise Killed

    ckpt = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(Killed):
        pretrain(
            fresh(), x, x[:30], cfg, torch.Generator().manual_seed(0), CPU, die_after_first, checkpoint=ckpt
        )
    torch.manual_seed(123)  # whatever the RNGs hold now, the checkpoint restores them
    replayed = []
    resumed_model = fresh()
    resumed = pretrain(
        resumed_model,
        x,
        x[:30],
        cfg,
        torch.Generator().manual_seed(99),
        CPU,
        replayed.append,
        checkpoint=ckpt,
    )
    assert ckpt.resumed_from == 1 and [h.epoch for h in replayed] == [1, 2, 3]
    assert [(h.train_loss, h.val_loss) for h in resumed] == [(h.train_loss, h.val_loss) for h in expected]
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def test_a_corrupt_checkpoint_is_refused_with_its_path(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.directory.mkdir()
    ckpt.path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="delete it to start afresh") as err:
        ckpt.load()
    assert str(ckpt.path) in str(err.value)


def test_a_checkpoint_of_another_model_is_refused_with_the_fix(tmp_path: Path) -> None:
    x, cfg = toy(64), PretrainConfig(epochs=2, batch_size=32)
    ckpt = Checkpointer(tmp_path / "ckpt")
    torch.manual_seed(0)
    pretrain(
        build_autoencoder(spec()), x, x[:8], cfg, torch.Generator(), CPU, checkpoint=ckpt
    )  # the loop leaves it; the stage clears it
    wider = ModelSpec(name="conv", input_shape=(1, 8, 8), latent_dim=6, width=8, depth=2)
    with pytest.raises(ModelError, match="does not fit this run") as err:
        pretrain(build_autoencoder(wider), x, x[:8], cfg, torch.Generator(), CPU, checkpoint=ckpt)
    assert f"delete {ckpt.directory}" in str(err.value)
