"""The frozen-backbone feature cache.

With the backbone frozen and no training augmentation, the backbone's output for an
image never changes, so it is computed once per resolution and the head trains on the
cached features: E epochs then cost one backbone pass instead of E.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from atml import runtime
from atml.train.loop import rank_and_world


class FrozenFeatures(torch.nn.Module):
    """``preprocess`` then the backbone's features, in eval mode and without gradients."""

    def __init__(self, preprocess: torch.nn.Module, features: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.features(self.preprocess(images)).float()  # (B, D)


class HeadOnFrozen(torch.nn.Module):
    """The uncached path: backbone features recomputed for every batch, then the head."""

    def __init__(self, frozen: FrozenFeatures, head: torch.nn.Module) -> None:
        super().__init__()
        self.frozen = frozen
        self.head = head

    def train(self, mode: bool = True) -> HeadOnFrozen:
        super().train(mode)
        self.frozen.eval()  # the backbone always runs in eval mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.frozen(images))


@torch.inference_mode()
def extract(frozen: FrozenFeatures, images: torch.Tensor, *, batch_size: int, device: torch.device,
            amp: bool = True, progress: bool = False, desc: str = "features") -> tuple[torch.Tensor, float]:
    """Features ``(N, D)`` float32 on the CPU for uint8 ``images``, and the images/s achieved.

    Under torchrun each rank computes a contiguous shard and the shards are gathered, so
    every rank ends with all ``N`` rows, in order, and the rate is that of all ranks together.
    """
    frozen.eval()

    def compute(part: torch.Tensor) -> torch.Tensor:
        if device.type == "cuda":
            part = part.pin_memory()  # lets the copies below run asynchronously
        chunks = []
        for batch in tqdm(part.split(batch_size), desc=desc, leave=False, disable=not progress):
            with runtime.autocast(device, amp):
                chunks.append(frozen(batch.to(device, non_blocking=True)).float().cpu())
        return torch.cat(chunks)

    start = time.perf_counter()
    features = sharded(compute, images, device)
    return features, len(images) / max(time.perf_counter() - start, 1e-9)


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
