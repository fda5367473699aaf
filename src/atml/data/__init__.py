"""Datasets as uint8 tensors (in memory, or memory-mapped from the dataset cache), each file verified first."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so decode workers start without it
    import torch


@dataclasses.dataclass
class ImageSplit:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64, with the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    names: list[str] | None = None
    """Each image's file, relative to the dataset's folder, where it came from one (a user's folder, ImageNet); the
    interactive views name points and images by it."""

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str | None:
        """Image ``i``'s file, or None for a dataset that is not a folder of files."""
        return self.names[i] if self.names is not None else None

    def subset(self, limit: int, seed: int = 0) -> ImageSplit:
        """A class-balanced-in-expectation random subset of ``limit`` items (0: all)."""
        import torch

        if limit <= 0 or limit >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit]
        idx = idx.sort().values
        names = [self.names[i] for i in idx.tolist()] if self.names is not None else None
        return ImageSplit(self.images[idx], self.labels[idx], self.classes, names)

    def resized(self, size: int) -> ImageSplit:
        """Images bilinearly resized to ``size`` x ``size``, still uint8 (e.g. digits 8 -> 28 px)."""
        import torch

        out = torch.empty((len(self), self.images.shape[1], size, size), dtype=torch.uint8)
        for start in range(0, len(self), 1024):  # a float copy of 1,024 images at a time, not of the split
            x = torch.nn.functional.interpolate(self.images[start:start + 1024].float(), size=(size, size),
                                                mode="bilinear", align_corners=False)
            out[start:start + 1024] = x.round().clamp(0, 255).to(torch.uint8)
        return ImageSplit(out, self.labels, self.classes, self.names)


@dataclasses.dataclass
class ImageDataset:
    """A train/validation pair plus where it came from (recorded in ``env.json``)."""

    name: str
    train: ImageSplit
    val: ImageSplit
    source: str
    subset: str | None = None
    """How this is only a part of the named dataset (ImageNet-1k folders for some of its classes): a figure
    published on the whole dataset is then not comparable (:mod:`atml.references`)."""
