"""The frozen-backbone feature cache.

With the backbone frozen and no training augmentation, the backbone's output for an
image never changes, so it is computed once per resolution and the head trains on the
cached features: E epochs then cost one backbone pass instead of E.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from atml import runtime


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
    """Features ``(N, D)`` float32 on the CPU for uint8 ``images``, and the images/s achieved."""
    frozen.eval()
    if device.type == "cuda":
        images = images.pin_memory()  # lets the copies below run asynchronously
    chunks = []
    start = time.perf_counter()
    for batch in tqdm(images.split(batch_size), desc=desc, leave=False, disable=not progress):
        with runtime.autocast(device, amp):
            chunks.append(frozen(batch.to(device, non_blocking=True)).float().cpu())
    elapsed = time.perf_counter() - start
    return torch.cat(chunks), len(images) / max(elapsed, 1e-9)
