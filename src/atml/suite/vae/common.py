"""What the VAE experiments share: one config, one data path, one training function, one set of diagnostics.

``vae.train``, ``vae.collapse`` and ``vae.mitigate`` differ only in which training variants
they run and what they plot.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from matplotlib.lines import Line2D

from atml import figures
from atml.analysis import latent
from atml.context import RunContext
from atml.data import ImageDataset
from atml.data import factory as data_factory
from atml.models import factory
from atml.models import vae as vae_model
from atml.models.preprocess import Preprocess
from atml.results import Metric, counted
from atml.suite.vae.config import VAEConfig as Config
from atml.train.loop import PHASES, Batches, Fit, History, Phase, fit
from atml.train.vae_recipe import VAEStep, Variant


@dataclasses.dataclass
class Trained:
    """A trained VAE, its per-epoch records and its diagnostics on validation data."""

    variant: Variant
    model: vae_model.VAE
    preprocess: Preprocess
    """The VAE's own input (``Built.preprocess``, on the run's device): uint8 -> [0, 1]."""
    rows: History
    diag: dict[str, Any]


def baseline(cfg: Config) -> Variant:
    return Variant(f"baseline (beta={cfg.kl_weight:g})", kl_weight=cfg.kl_weight)


def mitigation_variants(cfg: Config) -> list[Variant]:
    """Every mitigation, all at the KL-heavy contrast weight, plus that setting untreated."""
    beta = cfg.contrast_kl_weight
    aggressive_epochs = max(1, round(cfg.epochs * cfg.aggressive_fraction))
    return [
        Variant(f"KL-heavy (beta={beta:g})", kl_weight=beta),
        Variant("linear warm-up", kl_weight=beta, schedule="warmup", warmup_fraction=cfg.warmup_fraction),
        Variant("cyclical", kl_weight=beta, schedule="cyclical", cycles=cfg.cycles),
        Variant(f"free bits ({cfg.free_bits:g} nats)", kl_weight=beta, free_bits=cfg.free_bits),
        Variant("aggressive encoder", kl_weight=beta, aggressive_epochs=aggressive_epochs,
                aggressive_steps=cfg.aggressive_steps),
    ]


def train_variant(cfg: Config, ctx: RunContext, data: ImageDataset, variant: Variant, stage: str) -> Trained:
    """Train a fresh VAE (seeded identically for every variant) and diagnose it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        built = factory.create("mlp-vae", family="vae", latent_dim=cfg.latent_dim, hidden=cfg.hidden)
    model, preprocess = built.model.to(ctx.device), built.preprocess.to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = VAEStep(variant, cfg.epochs, preprocess, optimizer)
    rows = fit(Fit(model, optimizer, Batches((data.train.images,), cfg.batch_size, shuffle=True, seed=cfg.seed),
                   Batches((data.val.images,), 1024), cfg.epochs, ctx.device, ctx.run, stage=stage, step=step,
                   callbacks=[step], checkpoint_path=ctx.checkpoint(stage), progress=ctx.progress, say=ctx.say,
                   ddp=False))  # encoder-only updates (aggressive variant) would stall DDP's reducer
    return Trained(variant, model, preprocess, rows, diagnose(model, preprocess, data, cfg, ctx.device))


@torch.no_grad()
def diagnose(model: vae_model.VAE, preprocess: Preprocess, data: ImageDataset, cfg: Config,
             device: torch.device) -> dict[str, Any]:
    """Collapse evidence on (a sample of) the validation set, in numbers."""
    images = data.val.subset(cfg.diag_samples, seed=cfg.seed).images
    mu, logvar = latent.encode_all(model, preprocess, images, device=device)
    active, mean_variance = latent.active_units(mu)
    generator = torch.Generator().manual_seed(cfg.seed)
    x = preprocess(images).cpu()
    z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()

    def decode(codes: torch.Tensor) -> torch.Tensor:
        return model.decode(codes.to(device)).cpu()

    def sse(recon: torch.Tensor) -> float:
        return float((recon - x).pow(2).flatten(1).sum(1).mean())

    kl = latent.mean_kl_per_dim(mu, logvar)
    recon_sample = decode(z)
    return {
        "active_units": active,
        "mutual_info": latent.mutual_information(mu, logvar, generator),
        "mutual_info_log_n": float(torch.log(torch.tensor(float(len(images))))),  # the estimate's scale
        "kl": float(kl.sum()),
        "kl_per_dim": kl.tolist(),
        "mu_variance_per_dim": mean_variance.tolist(),
        "mu_spread": float(mu.std(0).mean()),
        "sse_posterior_mean": sse(decode(mu)),
        "sse_prior_mean": sse(decode(torch.zeros_like(mu)).expand_as(x)),
        "neg_elbo_gaussian_nats": float(vae_model.neg_elbo_nats(torch.tensor(sse(recon_sample)), kl.sum(),
                                                               x[0].numel())),
    }


def final(rows: History, phase: Phase, key: str) -> float:
    return float(rows.last(phase, key))


def use_of_x(diag: dict[str, Any]) -> float:
    """Share of the prior-mean reconstruction error that encoding x removes (0: q(z|x) ignores x)."""
    result: float = 1 - diag["sse_posterior_mean"] / max(diag["sse_prior_mean"], 1e-9)
    return result


def verdict(diag: dict[str, Any], latent_dim: int) -> str:
    if diag["mutual_info"] < 0.5 or diag["kl"] < 1.0:
        return "collapsed"
    if diag["active_units"] < latent_dim / 2:
        return "partly collapsed"
    return "not collapsed"


def sample_prior(model: vae_model.VAE, n: int, latent_dim: int, device: torch.device, seed: int,
                 prior: str) -> torch.Tensor:
    """Decoded samples from N(0, I) or from a Laplace prior of the same variance (b = 1/sqrt 2)."""
    generator = torch.Generator().manual_seed(seed)
    if prior == "gaussian":
        z = torch.randn(n, latent_dim, generator=generator)
    else:
        u = torch.rand(n, latent_dim, generator=generator) - 0.5  # inverse-CDF sampling
        z = -(2 ** -0.5) * torch.sign(u) * torch.log1p(-2 * u.abs())
    with torch.no_grad():
        return model.decode(z.to(device)).cpu()


# -- figures shared by the three experiments ----------------------------------------------
@figures.styled
def loss_curves(runs: list[Trained]) -> Any:
    fig, axes = figures.figure(3, width=2.0, height=2.4)
    for i, run in enumerate(runs):
        for phase, style in zip(PHASES, ("--", "-")):
            pts = run.rows.phase(phase)
            for ax, key in zip(axes[0], ("mse_plus_kl", "recon", "kl")):
                ax.plot([r.epoch for r in pts], [r[key] for r in pts], style, color=figures.palette(i))
    for ax, title in zip(axes[0], ("MSE + KL (per image)", "reconstruction (SSE)", "KL (nats)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        figures.epoch_axis(ax)
    handles = [Line2D([], [], color=figures.palette(i), label=run.variant.name) for i, run in enumerate(runs)]
    figures.legend_below(fig, handles + figures.phase_handles(), ncol=3)
    return fig


@figures.styled
def image_rows(rows: dict[str, torch.Tensor], title: str = "") -> Any:
    """One row of images per entry (name -> (N, 1, H, W) in [0, 1])."""
    fig, axes = figures.figure(1, len(rows), width=2.0, height=0.55 * len(rows) + 0.3)
    for ax, (name, images) in zip(axes[:, 0], rows.items()):
        strip = torch.cat(list(images[:, 0].clamp(0, 1)), dim=1)  # (H, N*W)
        ax.imshow(strip.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


ACTIVE_COLOUR, INACTIVE_COLOUR = "C0", "C3"


def kl_bar_order(diag: dict[str, Any]) -> list[int]:
    """Latent dimensions by decreasing KL; each bar keeps its own dimension's activity colour."""
    kl = diag["kl_per_dim"]
    return sorted(range(len(kl)), key=lambda d: kl[d], reverse=True)


@figures.styled
def kl_per_dim_bars(runs: list[Trained]) -> Any:
    fig, axes = figures.figure(len(runs), width=2.0, height=2.0)
    for ax, run in zip(axes[0], runs):
        dims = kl_bar_order(run.diag)
        values = [run.diag["kl_per_dim"][d] for d in dims]
        colours = [ACTIVE_COLOUR if run.diag["mu_variance_per_dim"][d] > latent.ACTIVE_THRESHOLD else INACTIVE_COLOUR
                   for d in dims]
        ax.bar(range(len(values)), values, color=colours)
        ax.set_title(f"{run.variant.name}: {run.diag['active_units']} active", fontsize=7)
        ax.set_xlabel("latent dimension (sorted)")
        ax.set_ylabel("KL (nats)")
    fig.tight_layout()
    return fig


DIAG_UNITS = {"active_units": "", "mutual_info": "nats", "kl": "nats", "mu_spread": "", "sse_posterior_mean": "",
              "sse_prior_mean": "", "neg_elbo_gaussian_nats": "nats"}


def diag_metrics(diag: dict[str, Any], prefix: str = "", **condition: Any) -> list[Metric]:
    """The collapse diagnostics as records (``prefix``: the older flat names put the variant first)."""
    values = {**{k: diag[k] for k in DIAG_UNITS}, "use_of_x": use_of_x(diag)}
    return [Metric(k, float(v), DIAG_UNITS.get(k, ""), condition, f"{prefix}{k}" if prefix else None)
            for k, v in values.items()]


def variant_key(name: str) -> str:
    """A variant's name as it appears in metric names (``free bits (0.5 nats)`` -> ``free_bits__0_5_nats``)."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def diag_images(cfg: Config, data: ImageDataset) -> int:
    """How many validation images the diagnostics (active units, I(x; z)) use: the config's, at most the split."""
    return min(cfg.diag_samples, len(data.val))


def warnings(cfg: Config, data: ImageDataset) -> list[str]:
    """An I(x; z) estimate from few images is capped at log N: say so when N is small."""
    n = diag_images(cfg, data)
    if n >= MI_IMAGES:
        return []
    return [f"I(x; z) was estimated on {n} validation images, so it cannot exceed log {n} = {math.log(n):.2f} "
            f"nats whatever the encoder does; use at least {MI_IMAGES} (a larger split, or diag_samples)"]


MI_IMAGES = 200
"""Fewer validation images than this and the I(x; z) estimate's ceiling (log N) is a warning."""


def notes(cfg: Config, data: ImageDataset) -> list[str]:
    out = [f"Model: the course VAE (MLP {28 * 28}-{cfg.hidden}-{cfg.latent_dim}, sigmoid decoder), Adam lr {cfg.lr}, "
           f"batch {cfg.batch_size}, "
           f"{counted(cfg.epochs, 'epoch')}. Loss: squared error summed over pixels plus KL, both "
           "averaged over the batch, the seed report's scaling.",
           f"Active units: Cov_x E[z_i|x] > {latent.ACTIVE_THRESHOLD}; I(x; z) estimated on {diag_images(cfg, data)} "
           "validation images, as in He et al. 2019: a Monte Carlo estimate whose scale is log N for the N "
           "images used (the most information an N-image mixture can carry); sampling noise can put it "
           "slightly above log N."]
    if data_factory.describe(cfg.data).demo:
        out.append("Demo preset: scikit-learn's 8x8 digits upsampled to 28x28 stand in for FashionMNIST.")
    if data_factory.describe(cfg.data).generated:
        out.append(f"Generated {cfg.data.split('-', 1)[1]} files in the real format, not the real data: the numbers "
                   "test the code path only.")
    return out
