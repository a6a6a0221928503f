"""Data-parallel pretraining under ``torchrun``: process group, model wrapping, batch slices.

``torchrun`` (or a PyTorchJob's pods) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; with a world
size above 1 the pretrain stage joins the group (nccl on CUDA, gloo on CPU), wraps the model in
DistributedDataParallel and every rank trains on its slice of each *global* batch
(``pretrain.batch_size`` is the global batch). All ranks draw the same batch order from the
same seeded generator, so the global batches are those of a single process; the one exception
is an epoch's last batch when it has fewer than 2 rows per rank, which is skipped (a rank with
0 or 1 rows cannot take a BatchNorm step).

BatchNorm: on CUDA the model's BatchNorm layers become SyncBatchNorm, so statistics are those
of the global batch and results match one process up to floating-point summation order. On CPU
(gloo) this torch refuses SyncBatchNorm ("SyncBatchNorm expected input tensor to be on GPU"),
so each rank normalises with its own slice's statistics and the saved running statistics are
rank 0's: results differ slightly from one process. Models without BatchNorm match on CPU too
(tests/test_distributed.py checks that). Random corruption (denoising noise, MAE masks, VAE
samples) is drawn per rank, so those variants match one process in distribution, not exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import overload

import torch
import torch.distributed as dist
from torch import nn

from aepipe.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistEnv:
        """The torchrun environment of this process (a single process when it is absent)."""
        try:
            return cls(
                int(os.environ.get("RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)),
            )
        except ValueError:
            raise ConfigError(
                "RANK / WORLD_SIZE / LOCAL_RANK must be integers (they are set by torchrun)"
            ) from None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's GPU (``cuda:LOCAL_RANK``) when training on CUDA."""
        if device.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP around ``model`` (SyncBatchNorm first on CUDA); ``model`` itself is left usable."""
        if not self.enabled:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    @overload
    def shard(self, t: torch.Tensor) -> torch.Tensor: ...
    @overload
    def shard(self, t: None) -> None: ...
    def shard(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's slice of a global batch (slices differ by at most one row)."""
        if t is None or not self.enabled:
            return t
        return t.tensor_split(self.world)[self.rank]

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def agree(self, value: int) -> tuple[int, int]:
        """(min, max) of ``value`` over ranks, e.g. the epoch each rank can resume from."""
        if not self.enabled:
            return value, value
        t = torch.tensor([value, -value], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return -int(t[1]), int(t[0])
