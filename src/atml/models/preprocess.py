"""One preprocessing for every model: uint8 images of any size -> the normalised input the weights expect.

Built from a registry entry's :class:`~atml.models.registry.Preprocessing` (input size, crop
fraction, interpolation, mean, std), the same for CNNs, ViTs and CLIP. The rule is timm's
evaluation transform, run on the device on whole batches:

* images smaller than the input (CIFAR-10, digits) are resized straight to it;
* larger ones have their short side resized to ``input_size / crop_pct`` (torchvision's 232 or
  256 for ResNet-152, timm's ``crop_pct``), then the centre ``input_size`` square is kept, by
  torchvision's rules for the long side and the crop's offset (:mod:`atml.data.decode`), so an
  image the dataset cache decoded at that short side is only cropped here;
* an experiment that studies other resolutions (``resnet.head``'s sweep) passes ``size``: the
  whole image is then resized to ``size`` (no crop), which is what the resolution means there.

Grey images are repeated to three channels. After a bicubic resize, values are clamped to
[0, 1] (bicubic overshoots; bilinear cannot).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from atml.data.decode import centre_offset, resized_shape
from atml.models.registry import Preprocessing


def resize_size(pre: Preprocessing) -> int:
    """The short side an image is resized to before the centre crop (floor, as timm; 224 / (224/232) is 232)."""
    return math.floor(pre.input_size / pre.crop_pct + 1e-6)


class Preprocess(nn.Module):
    """uint8 ``(N, C, H, W)`` -> normalised float ``(N, 3, size, size)`` (``(N, 1, ...)`` for the grey VAE and DCGAN),
    by the weights' own rule (module doc)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, pre: Preprocessing, size: int | None = None, *, channels_last: bool = False) -> None:
        super().__init__()
        self.preprocessing = pre
        self.size = size or pre.input_size
        self.resize = resize_size(pre) if size is None else self.size
        self.mode = pre.interpolation
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.device, torch.float32) / 255
        if x.shape[1] == 1 and self.mean.shape[1] == 3:  # grey (digits) into an RGB model
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if min(h, w) < self.size:  # small images: straight to the input size
            x = self._resample(F.interpolate(x, size=(self.size, self.size), mode=self.mode, align_corners=False))
        elif (h, w) != (self.size, self.size):
            size = resized_shape(h, w, max(self.resize, self.size)) if min(h, w) != self.resize else (h, w)
            if size != (h, w):
                x = self._resample(F.interpolate(x, size=size, mode=self.mode, align_corners=False, antialias=True))
            top, left = centre_offset(size[0], self.size), centre_offset(size[1], self.size)
            x = x[..., top:top + self.size, left:left + self.size]
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 1) if self.mode == "bicubic" else x

    def extra_repr(self) -> str:
        return f"size={self.size}, resize={self.resize}, mode={self.mode}, channels_last={self.channels_last}"
