"""Posterior-collapse diagnostics for a Gaussian-posterior VAE.

* active units (Burda et al. 2016): dimension i is active if Cov_x(E_q[z_i | x]) > 0.01;
* the mutual information I(x; z) under the aggregate posterior, estimated as in He et
  al. 2019 (``calc_mi`` of jxhe/vae-lagging-encoder) on a sample of N inputs. The true
  I(x; z) of that N-point mixture is at most log N; the estimate (an exact entropy term
  minus a one-sample Monte Carlo term) is a random number near it and can exceed log N
  slightly (7.629 against log N = 7.601 was seen), so log N is a scale, not a hard cap;
* the KL of each latent dimension, averaged over the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from atml import timemap
from atml.models.vae import kl_per_dim

ACTIVE_THRESHOLD = 0.01


@timemap.counted("analysis")
def active_units(mu: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, torch.Tensor]:
    """Number of active dimensions and the variance across inputs of each posterior mean."""
    variance = mu.double().var(dim=0, unbiased=True)  # (latent,)
    return int((variance > threshold).sum()), variance.float()


@timemap.counted("analysis")
def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """I(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) the mixture of the N posteriors (nats).

    A Monte Carlo estimate (one z per input); near log N it can exceed log N by sampling noise.
    """
    mu, logvar = mu.double(), logvar.double()
    n, dim = mu.shape
    neg_entropy = (-0.5 * dim * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    z = mu + eps * (0.5 * logvar).exp()  # (N, latent): one sample from each posterior
    dev = z[:, None, :] - mu[None, :, :]  # (N, N, latent): sample i under posterior j
    log_density = -0.5 * (dev.pow(2) / logvar.exp()[None]).sum(-1) - 0.5 * (
        dim * math.log(2 * math.pi) + logvar.sum(-1)[None])  # (N, N)
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(n)  # (N,)
    return float(neg_entropy - log_qz.mean())


def mean_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(latent,) KL(q(z_i|x) || N(0,1)) averaged over the inputs, in nats."""
    return kl_per_dim(mu, logvar).mean(0)


@torch.no_grad()
def encode_all(model: Any, preprocess: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               batch_size: int = 512, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior parameters (mu, logvar), each (N, latent), for uint8 images through the VAE's own
    ``preprocess`` (on ``device``)."""
    device = device or torch.device("cpu")
    model.eval()
    mus, logvars = [], []
    for batch in images.split(batch_size):
        mu, logvar = model.encode(preprocess(batch.to(device)))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus), torch.cat(logvars)
