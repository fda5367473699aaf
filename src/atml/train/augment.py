"""Training augmentation that runs on the device, on batches of normalised images."""

from __future__ import annotations

import torch
from torch import nn


class Augment(nn.Module):
    """Random crop (pad by 1/8 of the size, reflect) and optional horizontal flip, on the device.

    Active only in training mode; uses torch's global generator, whose state every
    checkpoint saves, so a resumed run draws the same crops.
    """

    def __init__(self, hflip: bool) -> None:
        super().__init__()
        self.hflip = hflip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,)).tolist()
        dx = torch.randint(0, 2 * pad + 1, (n,)).tolist()
        out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        if self.hflip:
            flip = torch.rand(n) < 0.5
            out = torch.where(flip.to(out.device)[:, None, None, None], out.flip(-1), out)
        return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) else out
