"""Everything about running as one of several processes under ``torchrun``, in one place.

As torchvision's ``references/classification/utils.py`` keeps its ``init_distributed_mode``,
``get_rank`` and friends together: joining the process group, this process's rank, wrapping a
model in DistributedDataParallel, averaging gradients by hand, reducing metric totals, and
computing a tensor in shards that every rank then holds whole.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job."""

    rank: int
    world: int
    local_rank: int


def init_distributed() -> Distributed | None:
    """Join the process group torchrun set up (nccl on GPUs, gloo on CPUs); None when not under torchrun.

    ``torchrun --nproc-per-node 1`` joins a group of one, so that a single process runs the
    same distributed path (DistributedDataParallel, SyncBatchNorm, collectives) as many do.
    """
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


UNSHARDED: dict[str, Any] = {"rank": 0, "world": 1}
"""``Batches(..., **UNSHARDED)``: every rank sees all the data (the cached demo pretrainings, which
each rank computes identically rather than racing on one cache file with different weights)."""


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distribute(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel under torchrun (SyncBatchNorm on GPUs), even with one process; the
    module itself outside torchrun, or when it is already wrapped or has nothing to train."""
    if not (dist.is_available() and dist.is_initialized()) or isinstance(module, DistributedDataParallel):
        return module
    if not any(p.requires_grad for p in module.parameters()):
        return module
    if device.type == "cuda":
        return DistributedDataParallel(sync_batchnorm(module), device_ids=[device.index])
    return DistributedDataParallel(module)  # gloo on CPU: per-rank BatchNorm statistics


PLAIN_BATCHNORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Plain BatchNorm layers become SyncBatchNorm; subclasses are left alone.

    torch's ``convert_sync_batchnorm`` converts every ``_BatchNorm`` subclass too, which
    would unfreeze atml's eval-pinned frozen norms and drop the activation of timm's
    ``BatchNormAct2d``; those keep per-process statistics (frozen ones have none to sync).
    """
    if type(module) in PLAIN_BATCHNORM:
        result: torch.nn.Module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return result
    for name, child in module.named_children():
        converted = sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def sync_gradients(params: Any) -> None:
    """Average every gradient across ranks (what DDP does during backward); a no-op alone."""
    world = rank_and_world()[1]
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def unwrap(model: torch.nn.Module) -> Any:
    """The module inside a DistributedDataParallel wrapper (checkpoints hold its plain state); typed Any: callers
    use their own model's methods."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def reduce_totals(sums: dict[str, torch.Tensor], seen: int) -> tuple[dict[str, torch.Tensor], int]:
    """Sum every rank's metric totals and sample counts, so each rank logs the global means."""
    if rank_and_world()[1] == 1:
        return sums, seen
    names = list(sums)  # every rank inserted the same names in the same order
    flat = torch.cat([sums[n].flatten() for n in names] + [torch.tensor([float(seen)], dtype=torch.float64)])
    dist.all_reduce(flat)
    out, offset = {}, 0
    for name in names:
        size = sums[name].numel()
        out[name] = flat[offset:offset + size].view_as(sums[name])
        offset += size
    return out, int(flat[-1].item())


def sharded(compute: Callable[[torch.Tensor], torch.Tensor], items: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``compute(items)`` split across torchrun ranks: each computes a contiguous shard, all gather."""
    rank, world = rank_and_world()
    if world == 1 or len(items) < world:
        return compute(items)
    per = -(-len(items) // world)
    mine = compute(items[rank * per:(rank + 1) * per])
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((per, *mine.shape[1:]), dtype=mine.dtype, device=comm)
    padded[:len(mine)] = mine.to(comm)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:len(items)].cpu()
