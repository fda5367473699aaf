"""The course's VAE: ``VAE(latent_dim=20)``, ``forward(x) -> VAEOutput``, ``encode``, ``decode``.

An MLP (784 -> 400 -> 2 x latent; latent -> 400 -> 784, sigmoid output), the classic
architecture of the PyTorch VAE example. It stays fixed in every atml experiment:
posterior-collapse mitigations change the training, never the model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from atml.models.types import trained_from_scratch

# -log N(x | x_hat, sigma^2 I) = ||x - x_hat||^2 / (2 sigma^2) + D/2 log(2 pi sigma^2). The course loss
# (squared error summed over pixels) is exactly this negative log-likelihood with sigma^2 = 1/2, up to
# the constant D/2 log(pi): adding it turns the loss into nats.
GAUSSIAN_SIGMA2 = 0.5


class VAEOutput(NamedTuple):
    recon: torch.Tensor
    """Decoder mean, (B, 1, 28, 28) in [0, 1]."""
    mu: torch.Tensor
    """Posterior means, (B, latent)."""
    logvar: torch.Tensor
    """Posterior log-variances, (B, latent)."""
    z: torch.Tensor
    """The reparameterised sample that was decoded, (B, latent)."""


class VAELoss(NamedTuple):
    """Per-image terms, averaged over the batch. ``total = recon + kl_weight * kl``."""

    total: torch.Tensor
    recon: torch.Tensor
    """Squared error summed over pixels (the seed report's MSE, reduction='sum' per image)."""
    kl: torch.Tensor
    """KL(q(z|x) || N(0, I)) in nats, summed over latent dimensions."""
    kl_per_dim: torch.Tensor
    """(latent,) KL of each dimension; sums to ``kl``."""


class VAE(nn.Module):
    def __init__(self, latent_dim: int = 20, hidden: int = 400, image_size: int = 28) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        pixels = image_size * image_size
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU())
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, hidden)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(z)
        return torch.sigmoid(logits).view(-1, 1, self.image_size, self.image_size)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.fc_mu.parameters(), *self.fc_logvar.parameters()]


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): differentiable in mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B, latent) closed-form KL(N(mu, sigma^2) || N(0, 1)) of each dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def loss(out: VAEOutput, x: torch.Tensor, *, kl_weight: float = 1.0, free_bits: float = 0.0) -> VAELoss:
    """MSE (sum over pixels) + weighted KL, both averaged over the batch.

    ``free_bits`` > 0 applies Kingma et al. (2016)'s free bits to the optimised KL only: each
    dimension's batch-mean KL is clamped from below at that many nats. The reported ``kl``
    and ``kl_per_dim`` are always the true, unclamped values.
    """
    x = as_recon_layout(x, out.recon)
    recon = F.mse_loss(out.recon, x, reduction="none").flatten(1).sum(1).mean()
    per_dim = kl_per_dim(out.mu, out.logvar).mean(0)  # (latent,)
    kl = per_dim.sum()
    optimised_kl = per_dim.clamp(min=free_bits).sum() if free_bits > 0 else kl
    return VAELoss(recon + kl_weight * optimised_kl, recon, kl, per_dim)


def as_recon_layout(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Targets in the reconstruction's ``(B, 1, H, W)`` layout; ``(B, H, W)`` and ``(B, H*W)`` are accepted.

    Any other shape is an error: broadcasting ``(B, H, W)`` against ``(B, 1, H, W)`` would
    silently compare every image with every other and make the loss ``B`` times too large.
    """
    if x.shape == recon.shape:
        return x
    if x.shape[0] == recon.shape[0] and x[0].numel() == recon[0].numel() and x.dim() in (2, 3):
        return x.reshape(recon.shape)
    raise ValueError(f"VAE targets of shape {tuple(x.shape)} do not match reconstructions of shape "
                     f"{tuple(recon.shape)}; pass (B, 1, H, W), (B, H, W) or (B, H*W)")


def neg_elbo_nats(recon_sse: torch.Tensor, kl: torch.Tensor, pixels: int) -> torch.Tensor:
    """-ELBO in nats per image for the Gaussian decoder (sigma^2 = 1/2) the MSE-sum loss implies."""
    const = 0.5 * pixels * math.log(2 * math.pi * GAUSSIAN_SIGMA2)
    return recon_sse / (2 * GAUSSIAN_SIGMA2) + const + kl


# -- the family, as the factory knows it ----------------------------------------------------
SPEC = trained_from_scratch("vae", VAE)
"""The VAE: atml's own architecture, trained by the experiments from a seeded initialisation (or a file)."""
