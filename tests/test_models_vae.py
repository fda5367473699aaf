"""The VAE against closed forms and hand computations."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from atml.models import vae


def test_interface_and_shapes():
    model = vae.VAE(latent_dim=20)
    out = model(torch.rand(4, 1, 28, 28))
    assert isinstance(out, vae.VAEOutput)
    assert out.recon.shape == (4, 1, 28, 28) and out.mu.shape == out.logvar.shape == out.z.shape == (4, 20)
    assert 0 <= float(out.recon.min()) and float(out.recon.max()) <= 1
    mu, logvar = model.encode(torch.rand(2, 1, 28, 28))
    assert model.decode(mu).shape == (2, 1, 28, 28)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
    assert torch.allclose(vae.kl_per_dim(mu, logvar), expected, atol=1e-6)


def test_loss_terms_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    recon = torch.full_like(x, 0.5)
    mu = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)]])
    out = vae.VAEOutput(recon, mu, logvar, mu)
    terms = vae.loss(out, x, kl_weight=2.0)
    sse = ((0.25 + 0.25 + 0 + 0.0625) + (0.25 * 4)) / 2  # per image, then batch mean
    kl_dims = torch.tensor([(0 + 2.0) / 2, (0.5 + 0.5 * (4 - 1 - math.log(4))) / 2])  # batch mean per dim
    assert terms.recon.item() == pytest.approx(sse)
    assert torch.allclose(terms.kl_per_dim, kl_dims)
    assert terms.kl.item() == pytest.approx(float(kl_dims.sum()))  # per-dim KL sums to KL
    assert terms.total.item() == pytest.approx(sse + 2.0 * float(kl_dims.sum()))


def test_free_bits_clamp_the_optimised_kl_only():
    x = torch.rand(3, 1, 2, 2)
    out = vae.VAEOutput(x.clone(), torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4))  # KL = 0
    terms = vae.loss(out, x, free_bits=0.5)
    assert terms.kl.item() == 0 and terms.total.item() == pytest.approx(4 * 0.5)


def test_reparameterisation_passes_gradients():
    mu = torch.zeros(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    vae.reparameterise(mu, logvar).pow(2).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_gaussian_nats_are_the_mse_loss_plus_a_constant():
    pixels = 784
    nats = vae.neg_elbo_nats(torch.tensor(10.0), torch.tensor(3.0), pixels)
    assert nats.item() == pytest.approx(10.0 + 3.0 + 0.5 * pixels * math.log(math.pi))


def test_loss_accepts_targets_without_the_channel_axis_and_refuses_other_shapes():
    """(B, 28, 28) targets used to broadcast against (B, 1, 28, 28): a loss B times too large."""
    torch.manual_seed(0)
    model = vae.VAE()
    x = torch.rand(8, 1, 28, 28)
    out = model(x)
    reference = vae.loss(out, x)
    for layout in (x[:, 0], x.flatten(1)):
        assert torch.allclose(vae.loss(out, layout).total, reference.total)
    with pytest.raises(ValueError, match=r"targets of shape \(8, 28, 27\)"):
        vae.loss(out, torch.rand(8, 28, 27))
