"""Device choice and its fast paths (bf16 autocast, channels_last, cuDNN autotuning), memory
budgets, seeding and progress bars.

The fast paths act on CUDA only by default: on a CPU they would change the floating-point
results (channels_last picks other convolution kernels), and CPU runs must reproduce exactly.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
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


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning (fixed shapes: pays once) and TF32 matmuls on CUDA; nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def wants_channels_last(setting: str | bool, device: torch.device) -> bool:
    """``auto``: on CUDA only (tensor-core convolutions want NHWC; on CPU it changes results)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def available_memory(device: torch.device) -> int:
    """Bytes free for data on ``device``: free GPU memory, or host memory available to this
    process (the smaller of MemAvailable and what the cgroup limit leaves, as in a pod)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = _meminfo_available()
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit, used = (
            (cgroup / "memory.max").read_text().strip(),
            int((cgroup / "memory.current").read_text()),
        )
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(free, 0)


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


def progress_enabled() -> bool:
    """Bars only for a person at a terminal: off under CI, off when stderr is not a TTY."""
    flag = os.environ.get("AEPIPE_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty() and not os.environ.get("CI")
