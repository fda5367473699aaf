"""DCGAN for 28x28 grayscale images (Radford et al. 2016's recipe, sized for FashionMNIST).

Generator: z (100) -> 256x7x7 -> 128x14x14 -> 1x28x28, transposed convolutions with
BatchNorm and ReLU, tanh output in [-1, 1]. Discriminator: strided convolutions with
LeakyReLU(0.2) (BatchNorm after the first), one logit per image. Weights start from
N(0, 0.02) as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from atml.models.types import trained_from_scratch

LATENT_DIM = 100


class Generator(nn.Module):
    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, width * 4, 7, 1, 0, bias=False),  # (B, 4w, 7, 7)
            nn.BatchNorm2d(width * 4), nn.ReLU(True),
            nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False),  # (B, 2w, 14, 14)
            nn.BatchNorm2d(width * 2), nn.ReLU(True),
            nn.ConvTranspose2d(width * 2, 1, 4, 2, 1, bias=False),  # (B, 1, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(z.view(len(z), self.latent_dim, 1, 1))
        return out


class Discriminator(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),  # (B, w, 14, 14)
            nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),  # (B, 2w, 7, 7)
            nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width * 2, 1, 7, 1, 0, bias=False),  # (B, 1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).flatten()  # (B,) logits
        return out


class DCGAN(nn.Module):
    """Both networks in one module, so one checkpoint holds the whole game."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64) -> None:
        super().__init__()
        self.generator = Generator(latent_dim, width)
        self.discriminator = Discriminator(width)
        self.apply(init_weights)

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        z = torch.randn(n, self.generator.latent_dim, generator=generator)
        out: torch.Tensor = self.generator(z.to(device or next(self.parameters()).device))
        return out


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1]."""
    return (images + 1) / 2


# -- the family, as the factory knows it ----------------------------------------------------
SPEC = trained_from_scratch("gan", DCGAN)
"""The DCGAN: atml's own architecture, trained by the experiments from a seeded initialisation (or a file)."""
