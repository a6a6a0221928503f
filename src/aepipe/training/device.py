"""Device choice and its fast paths (bf16 autocast, channels_last, cuDNN autotuning, CPU
threads), memory budgets, seeding and progress bars.

Which fast path a device type takes by default is written down in :data:`FAST_PATHS`, each
entry decided by a measurement (``bench/throughput.py``, ``bench/speedrun.py``), not assumed.
A fast path may change the last digits of a result (channels_last picks other convolution
kernels; the thread count splits reductions differently), never whether a run reproduces: the
same params on the same machine give the same weights. The bit-for-bit comparison with a plain
textbook loop (``tests/test_loop.py``) pins ``channels_last: false`` and the thread count.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aepipe.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "params.yaml: device is 'cuda' but no CUDA device is available; set device: auto or cpu"
        )
    return torch.device(name)


@dataclass(frozen=True)
class FastPaths:
    """What ``auto`` means on one device type."""

    channels_last: bool  # NHWC tensors and weights (pretrain.channels_last: auto, extraction)
    bf16_autocast: bool  # forward passes under bf16 autocast (no loss scaling needed, unlike fp16)
    compile_from_steps: int | None  # pretrain.compile: auto compiles runs this long (None: never)


# Measured, not assumed (README "Performance and scale" has the figures and how they were taken):
# - cuda: NHWC and bf16 feed the tensor cores; torch.compile stays opt-in as it was (not measured
#   on a GPU in this project: no GPU was lent).
# - cpu (2-core AMD EPYC, AVX2, oneDNN; `bench/speedrun.py --settings` on a quiet machine, every
#   other process stopped, 2026-12-01): channels_last x1.09 per pretraining step and x1.40 for
#   extraction: on. bf16 autocast x1.17, but it changes the results and the speedrun's 99% has not
#   been re-checked with it: off until it is (the earlier "slower" figures came from loaded runs).
#   torch.compile x1.02 once compiled, +4.3 s to compile: it pays only after ~200 epochs of that
#   size, which no default run has, so auto does not compile on CPU (compile_from_steps None);
#   `pretrain.compile: true` opts in.
COMPILE_BREAK_EVEN: int | None = None  # steps whose savings pay for the compilation, once measured reliably
FAST_PATHS: dict[str, FastPaths] = {
    "cuda": FastPaths(channels_last=True, bf16_autocast=True, compile_from_steps=None),
    "cpu": FastPaths(channels_last=True, bf16_autocast=False, compile_from_steps=COMPILE_BREAK_EVEN),
}
PLAIN = FastPaths(channels_last=False, bf16_autocast=False, compile_from_steps=None)  # unmeasured types


def fast_paths(device: torch.device) -> FastPaths:
    return FAST_PATHS.get(device.type, PLAIN)


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning (fixed shapes: pays once) and TF32 matmuls on CUDA; nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def threads_set(setting: int | str) -> Iterator[int]:
    """Run the body with :func:`cpu_threads` ``(setting)`` torch threads, then restore the count."""
    before = torch.get_num_threads()
    wanted = cpu_threads(setting, before)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def cpu_threads(setting: int | str = "auto", current: int | None = None, cgroup: Path | None = None) -> int:
    """Threads for torch's CPU ops. An int is used as given. ``auto`` keeps the count this process
    already has (torch's default, ``OMP_NUM_THREADS``, or what a caller set) but never more than
    the CPUs the process may use: its affinity mask and its cgroup CPU quota. In a pod limited to
    4 CPUs on a 64-core node torch would otherwise start 64 threads and spend its quota spinning."""
    if setting != "auto":
        return int(setting)
    current = torch.get_num_threads() if current is None else current
    return max(1, min(current, available_cpus(cgroup)))


def available_cpus(cgroup: Path | None = None) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(Path(cgroup or "/sys/fs/cgroup"))
    return cpus if quota is None else min(cpus, max(1, math.ceil(quota)))


def cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs' worth of time the cgroup may use, or None (no quota, or none readable): cgroup v2's
    ``cpu.max`` ("max 100000" = none), else cgroup v1's ``cpu/cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us`` (quota -1 = none), as older nodes mount them."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for controller in ("cpu", "cpu,cpuacct"):
        try:
            v1_quota = int((root / controller / "cpu.cfs_quota_us").read_text())
            v1_period = int((root / controller / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if v1_quota < 0 or v1_period <= 0 else v1_quota / v1_period
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast where :data:`FAST_PATHS` says it pays (CUDA); plain fp32 elsewhere."""
    if fast_paths(device).bf16_autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def wants_channels_last(setting: str | bool, device: torch.device) -> bool:
    """``auto``: the device type's measured choice (:data:`FAST_PATHS`); true/false pin it."""
    return fast_paths(device).channels_last if setting == "auto" else bool(setting)


def wants_compile(setting: str | bool, device: torch.device, steps: int) -> bool:
    """``auto``: compile when this run has at least the device type's measured break-even number of
    optimizer ``steps`` (:data:`FAST_PATHS`) and, on a CPU, a C++ compiler for inductor's kernels
    is installed; true/false pin it."""
    if setting != "auto":
        return bool(setting)
    threshold = fast_paths(device).compile_from_steps
    if threshold is None or steps < threshold:
        return False
    return device.type != "cpu" or any(
        shutil.which(cxx) for cxx in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if cxx
    )


def available_memory(device: torch.device, cgroup: Path | None = None) -> int:
    """Bytes free for data on ``device``: free GPU memory, or host memory available to this
    process (the smaller of MemAvailable and what the cgroup memory limit leaves, as in a pod)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = _meminfo_available()
    left = cgroup_memory_left(Path(cgroup or "/sys/fs/cgroup"))
    return max(free if left is None else min(free, left), 0)


def cgroup_memory_left(root: Path) -> int | None:
    """Limit minus usage of the cgroup, in bytes, or None (no limit, or none readable): cgroup
    v2's ``memory.max`` / ``memory.current``, else cgroup v1's ``memory/memory.limit_in_bytes`` /
    ``memory.usage_in_bytes`` (v1's "no limit" is a huge number, which the host figure undercuts)."""
    for limit_file, usage_file in (
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ):
        try:
            limit, used = limit_file.read_text().strip(), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        if limit == "max":
            return None
        try:
            return int(limit) - used
        except ValueError:
            return None
    return None


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a stage touches; return a CPU generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# A bar appears only for work still running after this many seconds: long work, not every blink.
PROGRESS_DELAY_S = 2.0


def progress_enabled() -> bool:
    """Bars only for a person at a terminal: off under CI, off when stderr is not a TTY."""
    flag = os.environ.get("AEPIPE_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty() and not os.environ.get("CI")
