"""The frozen-backbone feature cache.

With the backbone frozen and no training augmentation, the backbone's output for an
image never changes, so it is computed once per resolution and the head trains on the
cached features: E epochs then cost one backbone pass instead of E.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from atml import runtime
from atml.distributed import sharded


def _forward_features(module: Any, x: torch.Tensor) -> torch.Tensor:
    result: torch.Tensor = module.forward_features(x)
    return result


class FrozenFeatures(torch.nn.Module):
    """``preprocess`` then the backbone's features, in eval mode and without gradients.

    ``backbone`` is a submodule, so ``.to(device)`` moves it with the preprocessing;
    ``features(backbone, x)`` picks what to return (default: ``backbone.forward_features(x)``).
    ``compile`` wraps that call in ``torch.compile`` (see :func:`atml.runtime.maybe_compile`).
    """

    def __init__(self, preprocess: torch.nn.Module, backbone: torch.nn.Module,
                 features: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
                 compile: str = "off") -> None:
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        pick = features or _forward_features
        self._features = runtime.maybe_compile(lambda x: pick(self.backbone, x), compile)
        self.compiled = compile != "off"

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)  # the backbone always runs in eval mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            result: torch.Tensor = self._features(self.preprocess(images)).float()  # (B, D)
            return result


class HeadOnFrozen(torch.nn.Module):
    """The uncached path: backbone features recomputed for every batch, then the head."""

    def __init__(self, frozen: FrozenFeatures, head: torch.nn.Module) -> None:
        super().__init__()
        self.frozen = frozen
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.frozen(images))
        return result


def in_memory_limit() -> int:
    """Bytes of features kept in memory before :func:`extract` writes them to disk instead."""
    return int(os.environ.get("ATML_FEATURES_IN_MEMORY_MB", "2048")) << 20


def disk_features(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of ``shape`` over a memory-mapped file that is already unlinked (gone when unmapped)."""
    import numpy as np

    folder = runtime.cache_dir() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix="features-", suffix=".f32", dir=folder)
    try:
        os.ftruncate(handle, int(np.prod(shape)) * 4)
        array = np.memmap(path, dtype=np.float32, mode="r+", shape=shape)
    finally:
        os.close(handle)
        os.unlink(path)
    return torch.from_numpy(array)


class Rows:
    """The rows of an ``(N, ...)`` float32 result gathered batch by batch: kept on the device in memory, or, when
    the whole would pass :func:`in_memory_limit`, written to a :func:`disk_features` file as they come."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.chunks: list[torch.Tensor] = []
        self.spill: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        if self.spill is None and not self.chunks and self.total * rows[0].numel() * 4 > in_memory_limit():
            self.spill = disk_features((self.total, *rows.shape[1:]))
        if self.spill is not None:  # too large to hold: each batch goes to the file
            self.spill[self.done:self.done + len(rows)] = rows.float().cpu()
        else:
            self.chunks.append(rows)
        self.done += len(rows)

    def result(self) -> torch.Tensor:
        """All rows, float32 on the CPU (a tensor over the file's memory map when spilled)."""
        if self.spill is not None:
            return self.spill
        return torch.cat(self.chunks).float().cpu() if self.chunks else torch.empty(0)


@torch.inference_mode()
def extract(frozen: FrozenFeatures, images: torch.Tensor, *, batch_size: int, device: torch.device,
            amp: bool = True, progress: bool = False, desc: str = "features") -> tuple[torch.Tensor, float]:
    """Features ``(N, D)`` float32 on the CPU for uint8 ``images``, and the images/s achieved.

    On a GPU nothing waits inside the loop: each batch is pinned (only that batch: the split
    may be a memory map of any size) and copied without blocking, its features stay on the
    device, and one copy back at the end is the only synchronisation, so the host queues
    batch ``i + 1`` while the GPU computes batch ``i``.
    The rate includes every copy (uint8 images in host memory to features on the host).

    Features larger than :func:`in_memory_limit` (2 GB; ``ATML_FEATURES_IN_MEMORY_MB``) are
    written batch by batch to an unlinked file under ``$ATML_CACHE/features`` and returned as a
    tensor over its memory map, so they take file pages, not anonymous memory.

    Under torchrun each rank computes a contiguous shard and the shards are gathered, so
    every rank ends with all ``N`` rows, in order, and the rate is that of all ranks together.
    """
    frozen.eval()

    def compute(part: torch.Tensor) -> torch.Tensor:
        rows = Rows(len(part))
        for batch in tqdm(part.split(batch_size), desc=desc, leave=False, disable=not progress):
            n = len(batch)
            if frozen.compiled and n < batch_size:  # one input shape: a short last batch would recompile
                batch = torch.cat([batch, batch.new_zeros((batch_size - n, *batch.shape[1:]))])
            if device.type == "cuda":  # batch by batch (torch caches the page-locked blocks): async copies
                batch = batch.pin_memory()
            with runtime.autocast(device, amp):
                rows.add(frozen(batch.to(device, non_blocking=True))[:n])
        return rows.result()

    start = time.perf_counter()
    features = sharded(compute, images, device)
    return features, len(images) / max(time.perf_counter() - start, 1e-9)
