"""The per-device fast paths: what ``auto`` means, the CPU thread cap, and that the CPU fast path
(channels_last) reproduces itself exactly and the plain NCHW loop up to float rounding."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.config import PretrainConfig, parse_params
from aepipe.errors import ConfigError
from aepipe.models import ModelSpec, build_autoencoder
from aepipe.training import device as dev
from aepipe.training.pretrain import pretrain

CPU = torch.device("cpu")


def cgroup(tmp_path: Path, cpu_max: str) -> Path:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def test_available_cpus_is_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert dev.available_cpus(cgroup(tmp_path, "max 100000")) == affinity
    assert dev.available_cpus(cgroup(tmp_path, "50000 100000")) == 1  # half a CPU: one thread
    assert dev.available_cpus(cgroup(tmp_path, "150000 100000")) == min(affinity, 2)  # rounded up
    assert dev.available_cpus(tmp_path / "no-such-dir") == affinity


def test_available_cpus_reads_a_cgroup_v1_quota(tmp_path: Path) -> None:
    """Nodes that still mount cgroup v1: cpu/cpu.cfs_quota_us over cpu.cfs_period_us, -1 = none."""
    affinity = len(os.sched_getaffinity(0))

    def v1(name: str, quota: int, controller: str = "cpu") -> Path:
        (tmp_path / name / controller).mkdir(parents=True)
        (tmp_path / name / controller / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (tmp_path / name / controller / "cpu.cfs_period_us").write_text("100000\n")
        return tmp_path / name

    assert dev.available_cpus(v1("half", 50000)) == 1
    assert dev.available_cpus(v1("one-and-a-half", 150000, "cpu,cpuacct")) == min(affinity, 2)
    assert dev.available_cpus(v1("none", -1)) == affinity


def test_auto_threads_keep_the_process_count_but_never_exceed_the_quota(tmp_path: Path) -> None:
    four = cgroup(tmp_path, "400000 100000")
    limit = min(4, dev.available_cpus(four))
    assert dev.cpu_threads("auto", current=64, cgroup=four) == limit  # a pod on a big node
    assert dev.cpu_threads("auto", current=1, cgroup=four) == 1  # OMP_NUM_THREADS=1 is kept
    assert dev.cpu_threads(3, current=64, cgroup=four) == 3  # an int is used as given


def test_pretrain_runs_with_its_thread_setting_and_restores_the_count() -> None:
    before = torch.get_num_threads()
    pinned = 2 if before == 1 else 1
    seen: list[int] = []
    torch.manual_seed(0)
    model = build_autoencoder(ModelSpec(name="conv", input_shape=(1, 8, 8), latent_dim=4, width=2, depth=1))
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    x = np.random.default_rng(0).integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
    cfg = PretrainConfig(epochs=1, batch_size=16, threads=pinned)
    pretrain(model, x, x[:8], cfg, torch.Generator().manual_seed(0), CPU)
    assert seen and set(seen) == {pinned}
    assert torch.get_num_threads() == before


def test_auto_means_each_device_types_measured_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, other = torch.device("cuda"), torch.device("meta")
    for device in (CPU, cuda):
        assert dev.wants_channels_last("auto", device) == dev.FAST_PATHS[device.type].channels_last
        assert dev.wants_channels_last(False, device) is False
        assert dev.wants_compile(True, device, 1) is True and dev.wants_compile(False, device, 10**9) is False
    assert dev.FAST_PATHS["cuda"].bf16_autocast and dev.FAST_PATHS["cuda"].channels_last
    assert not dev.wants_channels_last("auto", other) and dev.fast_paths(other) == dev.PLAIN
    # compile: auto compiles only where a device type has a measured break-even; none has one yet
    # (CPU measurements disagree, README "Fast paths"; CUDA not measured), so auto never compiles
    for device in (CPU, cuda, other):
        assert not dev.wants_compile("auto", device, 10**9)
    # the mechanism: with a break-even, runs at least that long compile (on a CPU: given a C++ compiler)
    monkeypatch.setitem(dev.FAST_PATHS, "cpu", dev.FastPaths(True, False, compile_from_steps=100))
    assert not dev.wants_compile("auto", CPU, 99)
    assert dev.wants_compile("auto", CPU, 100) == bool(shutil.which("c++") or shutil.which("g++"))
    # bf16 on a CPU only where FAST_PATHS says so (off: it changes results; README "Fast paths").
    with dev.autocast(CPU):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == (torch.bfloat16 if dev.FAST_PATHS["cpu"].bf16_autocast else torch.float32)


def test_threads_and_compile_params_are_validated_with_the_key() -> None:
    params = parse_params({"pretrain": {"threads": 3, "compile": "auto", "channels_last": "auto"}})
    assert params.pretrain.threads == 3 and params.pretrain.compile == "auto"
    assert parse_params({}).pretrain.threads == "auto"
    for bad in (0, "many"):
        with pytest.raises(ConfigError, match=r"pretrain\.threads"):
            parse_params({"pretrain": {"threads": bad}})


def train(channels_last: bool | str) -> tuple[list[float], dict[str, torch.Tensor]]:
    x = np.random.default_rng(0).integers(0, 256, size=(96, 1, 8, 8), dtype=np.uint8)
    spec = ModelSpec(name="conv", input_shape=(1, 8, 8), latent_dim=6, width=4, depth=2)
    torch.manual_seed(0)
    model = build_autoencoder(spec)
    cfg = PretrainConfig(epochs=2, batch_size=32, channels_last=channels_last)
    history = pretrain(model, x, x[:32], cfg, torch.Generator().manual_seed(0), CPU)
    return [h.train_loss for h in history], model.state_dict()


def test_the_cpu_fast_path_reproduces_itself_and_computes_what_the_plain_loop_computes() -> None:
    fast, again, plain = train("auto"), train("auto"), train(False)
    assert fast[0] == again[0]
    for key, value in fast[1].items():
        assert torch.equal(value, again[1][key]), key
        assert value.is_contiguous(), key  # the saved model is back in the plain layout
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-3)  # Adam amplifies rounding over steps
    # One step's loss and gradients: the same up to float rounding in either layout.
    x = torch.rand(16, 1, 8, 8)
    spec = ModelSpec(name="conv", input_shape=(1, 8, 8), latent_dim=6, width=4, depth=2)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = build_autoencoder(spec).to(memory_format=layout)
        xb = x.contiguous(memory_format=layout)
        loss, _ = model.loss(xb, model(xb))
        loss.backward()
        grads.append([loss.detach()] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
