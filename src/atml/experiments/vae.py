"""The course VAE on FashionMNIST: ``vae.train``, ``vae.collapse`` and ``vae.mitigate``.

All three share one config, one data path, one training function and one set of
diagnostics; they differ only in which training variants they run and what they plot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from atml.analysis import latent
from atml.experiments import grayscale
from atml.config import RunConfig, require_positive, require_unit_interval
from atml.data import ImageDataset
from atml.errors import UsageError
from atml.models import vae as vae_model
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.train.loop import Batches, Fit, fit
from atml.train.vae_recipe import Variant, VAEStep

DATA = grayscale.DATA


@dataclasses.dataclass
class Config(RunConfig):
    data: str = "fashion-mnist"
    """fashion-mnist (official IDX files) | digits (scikit-learn, upsampled to 28 px) | generated-fashion-mnist |
    rehearsal-fashion-mnist (generated at the real counts: timing only)."""
    latent_dim: int = 20
    hidden: int = 400
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    """Adam learning rate."""
    kl_weight: float = 1.0
    """The baseline's KL weight (1: the ELBO, as in the course)."""
    contrast_kl_weight: float = 8.0
    """A KL-heavy setting that collapses the posterior; vae.mitigate's variants all use it."""
    free_bits: float = 0.5
    """Nats per latent dimension for the free-bits variant."""
    warmup_fraction: float = 0.5
    """Share of training over which the warm-up variant raises the KL weight from 0."""
    cycles: int = 4
    """Cycles of the cyclical schedule."""
    aggressive_fraction: float = 0.5
    """Share of epochs with extra encoder updates (aggressive variant)."""
    aggressive_steps: int = 5
    """Encoder-only updates per batch in the aggressive phase."""
    diag_samples: int = 1000
    """Validation images used for active units and mutual information (MI <= log of this)."""
    train_limit: int = 0
    val_limit: int = 0

    def validate(self) -> None:
        super().validate()
        if self.data not in DATA:
            raise UsageError(f"data={self.data!r} is not valid; choose one of {', '.join(DATA)}")
        if self.weights != "random":
            raise UsageError("the VAE experiments train from scratch: use weights=random")
        require_positive(self, "latent_dim", "hidden", "epochs", "batch_size", "cycles", "diag_samples")
        require_unit_interval(self, "warmup_fraction", "aggressive_fraction")
        if not self.lr > 0 or self.kl_weight < 0 or self.contrast_kl_weight < 0 or self.free_bits < 0:
            raise UsageError("lr must be > 0; kl_weight, contrast_kl_weight and free_bits must be >= 0")
        if self.aggressive_steps < 0 or self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("aggressive_steps, train_limit and val_limit must be >= 0")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-fashion-mnist", "epochs": 2, "batch_size": 64, "diag_samples": 100},
    "demo": {"offline": True, "data": "digits", "epochs": 20, "batch_size": 64},
    "full": {},
    "rehearsal": {"data": "rehearsal-fashion-mnist"},
}


# -- shared pieces --------------------------------------------------------------------
@dataclasses.dataclass
class Trained:
    """A trained VAE, its per-epoch records and its diagnostics on validation data."""

    variant: Variant
    model: vae_model.VAE
    rows: list[dict[str, Any]]
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
        model = vae_model.VAE(cfg.latent_dim, cfg.hidden).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = VAEStep(variant, cfg.epochs, optimizer)
    rows = fit(Fit(model, optimizer, Batches((data.train.images,), cfg.batch_size, shuffle=True, seed=cfg.seed),
                   Batches((data.val.images,), 1024), cfg.epochs, ctx.device, ctx.run, stage=stage, step=step,
                   callbacks=[step], checkpoint_path=ctx.checkpoint(stage), progress=ctx.progress, say=ctx.say,
                   ddp=False))  # encoder-only updates (aggressive variant) would stall DDP's reducer
    return Trained(variant, model, rows, diagnose(model, data, cfg, ctx.device))


@torch.no_grad()
def diagnose(model: vae_model.VAE, data: ImageDataset, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Collapse evidence on (a sample of) the validation set, in numbers."""
    images = data.val.subset(cfg.diag_samples, seed=cfg.seed).images
    mu, logvar = latent.encode_all(model, images, device=device)
    active, mean_variance = latent.active_units(mu)
    generator = torch.Generator().manual_seed(cfg.seed)
    x = images.float().div(255)
    z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
    decode = lambda codes: model.decode(codes.to(device)).cpu()  # noqa: E731
    kl = latent.mean_kl_per_dim(mu, logvar)
    sse = lambda recon: (recon - x).pow(2).flatten(1).sum(1).mean().item()  # noqa: E731
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


def final(rows: list[dict[str, Any]], phase: str, key: str) -> float:
    return [r for r in rows if r["phase"] == phase][-1][key]


def use_of_x(diag: dict[str, Any]) -> float:
    """Share of the prior-mean reconstruction error that encoding x removes (0: q(z|x) ignores x)."""
    return 1 - diag["sse_posterior_mean"] / max(diag["sse_prior_mean"], 1e-9)


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


# -- figures ----------------------------------------------------------------------------
@plots.styled
def loss_curves(runs: list[Trained]) -> Any:
    fig, axes = plots.figure(3, width=2.0, height=2.4)
    for i, run in enumerate(runs):
        for phase, style in (("train", "--"), ("val", "-")):
            pts = [r for r in run.rows if r["phase"] == phase]
            for ax, key in zip(axes[0], ("mse_plus_kl", "recon", "kl")):
                ax.plot([r["epoch"] for r in pts], [r[key] for r in pts], style, color=plots.palette(i))
    for ax, title in zip(axes[0], ("MSE + KL (per image)", "reconstruction (SSE)", "KL (nats)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        plots.epoch_axis(ax)
    handles = [plots.Line2D([], [], color=plots.palette(i), label=run.variant.name) for i, run in enumerate(runs)]
    plots.legend_below(fig, handles + plots.phase_handles(), ncol=3)
    return fig


@plots.styled
def image_rows(rows: dict[str, torch.Tensor], title: str = "") -> Any:
    """One row of images per entry (name -> (N, 1, H, W) in [0, 1])."""
    fig, axes = plots.figure(1, len(rows), width=2.0, height=0.55 * len(rows) + 0.3)
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


@plots.styled
def kl_per_dim_bars(runs: list[Trained]) -> Any:
    fig, axes = plots.figure(len(runs), width=2.0, height=2.0)
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


@plots.styled
def kl_heatmaps(runs: list[Trained]) -> Any:
    """KL per latent dimension (rows) per epoch (columns): where collapse sets in."""
    fig, axes = plots.figure(len(runs), width=2.0, height=2.0)
    for ax, run in zip(axes[0], runs):
        pts = [r for r in run.rows if r["phase"] == "val"]
        grid = torch.tensor([r["kl_per_dim"] for r in pts]).T  # (latent, epochs)
        image = ax.imshow(grid.numpy(), aspect="auto", cmap="magma", origin="lower",
                          extent=(0.5, len(pts) + 0.5, -0.5, grid.shape[0] - 0.5))
        ax.set_title(run.variant.name, fontsize=7)
        ax.set_xlabel("epoch")
        plots.epoch_axis(ax)
        ax.set_ylabel("latent dimension")
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="val KL (nats)")
    fig.tight_layout()
    return fig


@plots.styled
def mitigation_bars(runs: list[Trained]) -> Any:
    keys = (("active_units", "active units"), ("mutual_info", "I(x; z) (nats)"), ("kl", "KL (nats)"),
            ("sse_posterior_mean", "reconstruction SSE"))
    fig, axes = plots.figure(len(keys), width=2.0, height=2.2)
    names = [r.variant.name for r in runs]
    for ax, (key, label) in zip(axes[0], keys):
        ax.barh(range(len(runs)), [r.diag[key] for r in runs], color=[f"C{i}" for i in range(len(runs))])
        ax.set_title(label)
        ax.set_yticks(range(len(runs)), labels=names if ax is axes[0][0] else [""] * len(runs), fontsize=6)
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


def diag_metrics(diag: dict[str, Any], prefix: str = "") -> dict[str, float]:
    keys = ("active_units", "mutual_info", "kl", "mu_spread", "sse_posterior_mean", "sse_prior_mean",
            "neg_elbo_gaussian_nats")
    out = {f"{prefix}{k}": diag[k] for k in keys}
    out[f"{prefix}use_of_x"] = use_of_x(diag)
    return out


def variant_key(name: str) -> str:
    """A variant's name as it appears in metric names (``free bits (0.5 nats)`` -> ``free_bits__0_5_nats``)."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


# -- vae.train --------------------------------------------------------------------------
def run_train(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data = grayscale.load_data(cfg, ctx)
    trained = train_variant(cfg, ctx, data, baseline(cfg), "baseline")
    model, rows = trained.model, trained.rows
    test = data.val.images[:10]
    with torch.no_grad():
        x = test.float().div(255).to(ctx.device)
        recon = model(x).recon.cpu()
    n = 10
    figures = ctx.save_figure(loss_curves([trained]), "loss_curves")
    figures += ctx.save_figure(image_rows({"test images": x.cpu(), "reconstructions": recon}), "reconstructions")
    samples = {
        "N(0, I)": sample_prior(model, n, cfg.latent_dim, ctx.device, cfg.seed, "gaussian"),
        "Laplace(0, 1/sqrt2)": sample_prior(model, n, cfg.latent_dim, ctx.device, cfg.seed, "laplace"),
        "decoded prior mean": model.decode(torch.zeros(1, cfg.latent_dim, device=ctx.device)).detach().cpu(),
    }
    figures += ctx.save_figure(image_rows(samples, "generations from the prior"), "generations")
    metrics = {
        "train_loss": final(rows, "train", "mse_plus_kl"), "val_loss": final(rows, "val", "mse_plus_kl"),
        "val_recon": final(rows, "val", "recon"), "val_kl": final(rows, "val", "kl"),
        **diag_metrics(trained.diag),
        "sample_pixel_std_gaussian": float(samples["N(0, I)"].std(0).mean()),
        "sample_pixel_std_laplace": float(samples["Laplace(0, 1/sqrt2)"].std(0).mean()),
    }
    return {"metrics": metrics, "figures": figures, "notes": _notes(cfg)}


def discuss_train(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    return [
        f"Final loss (MSE summed over pixels + KL, per image): train {m['train_loss']:.2f}, validation "
        f"{m['val_loss']:.2f}, of which reconstruction {m['val_recon']:.2f} and KL {m['val_kl']:.2f} nats.",
        f"As a likelihood bound: -ELBO = {m['neg_elbo_gaussian_nats']:.1f} nats/image under the Gaussian decoder "
        "(sigma^2 = 1/2) that the MSE loss implies, on the grey-level images (not comparable with NLLs of "
        "Bernoulli decoders on binarised images).",
        f"{m['active_units']:.0f} latent dimensions are active; I(x; z) is {m['mutual_info']:.2f} nats.",
        _prior_sentence(m['sample_pixel_std_laplace'], m['sample_pixel_std_gaussian']),
    ]


def _prior_sentence(laplace: float, gaussian: float) -> str:
    more = laplace > gaussian
    return (f"Laplace-prior samples vary {'more' if more else 'less'} across draws than Gaussian ones (mean pixel std "
            f"{laplace:.3f} vs {gaussian:.3f}) at equal variance"
            + (": the Laplace prior's heavier tails reach latent regions the encoder rarely uses." if more else
               ": at equal variance the Laplace prior puts more draws near 0, and here that outweighs its tails."))


# -- vae.collapse -----------------------------------------------------------------------
def run_collapse(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data = grayscale.load_data(cfg, ctx)
    contrast = mitigation_variants(cfg)[0]
    runs = [train_variant(cfg, ctx, data, baseline(cfg), "baseline"),
            train_variant(cfg, ctx, data, contrast, "kl_heavy")]
    figures = ctx.save_figure(kl_per_dim_bars(runs), "kl_per_dim")
    figures += ctx.save_figure(kl_heatmaps(runs), "kl_per_dim_over_epochs")
    figures += ctx.save_figure(loss_curves(runs), "loss_curves")
    x = data.val.images[:10].float().div(255)
    rows = {"input": x}
    for run in runs:
        with torch.no_grad():
            mu, _ = run.model.encode(x.to(ctx.device))
            rows[f"{run.variant.name}: posterior mean"] = run.model.decode(mu).cpu()
            rows[f"{run.variant.name}: prior mean"] = run.model.decode(torch.zeros_like(mu)).cpu()
    figures += ctx.save_figure(image_rows(rows, "decoded from q(z|x) mean vs from the prior mean"), "posterior_vs_prior")
    metrics: dict[str, Any] = {}
    for run, prefix in zip(runs, ("baseline_", "kl_heavy_")):
        metrics.update(diag_metrics(run.diag, prefix))
        val = [r for r in run.rows if r["phase"] == "val"]
        metrics[f"{prefix}kl_epoch1"] = val[0]["kl"]
        metrics[f"{prefix}recon_epoch1"] = val[0]["recon"]
    table = {"title": "Posterior collapse in numbers (validation sample)",
             "columns": ["setting", "verdict", "active units", "I(x;z) nats", "KL nats", "mu spread",
                         "use of x", "KL epoch 1"],
             "rows": [[r.variant.name, verdict(r.diag, cfg.latent_dim), r.diag["active_units"], r.diag["mutual_info"],
                       r.diag["kl"], r.diag["mu_spread"], use_of_x(r.diag),
                       [x for x in r.rows if x["phase"] == "val"][0]["kl"]] for r in runs]}
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": _notes(cfg),
            "verdicts": {r.variant.name: verdict(r.diag, cfg.latent_dim) for r in runs},
            "latent_dim": cfg.latent_dim}


def discuss_collapse(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    text = []
    for prefix, name in (("baseline_", "the baseline"), ("kl_heavy_", "the KL-heavy setting")):
        state = ("collapsed" if m[f"{prefix}mutual_info"] < 0.5 or m[f"{prefix}kl"] < 1.0 else
                 "partly collapsed" if m[f"{prefix}active_units"] < results["latent_dim"] / 2 else "not collapsed")
        text.append(
            f"In {name} the posterior is {state}: {m[f'{prefix}active_units']:.0f}/{results['latent_dim']} active "
            f"units, I(x; z) = {m[f'{prefix}mutual_info']:.2f} nats, KL = {m[f'{prefix}kl']:.2f} nats; decoding the "
            f"posterior mean instead of the prior mean removes {m[f'{prefix}use_of_x']:.0%} of the reconstruction "
            "error" + (" - the decoder barely uses z." if m[f"{prefix}use_of_x"] < 0.2 else "."))
    text.append(_early_kl_sentence(m))
    text.append(_cause_sentence(_state(m, "baseline_", results["latent_dim"]),
                                _state(m, "kl_heavy_", results["latent_dim"])))
    return text


def _state(m: dict[str, Any], prefix: str, latent_dim: int) -> str:
    return verdict({k: m[f"{prefix}{k}"] for k in ("mutual_info", "kl", "active_units")}, latent_dim)


def _early_kl_sentence(m: dict[str, Any]) -> str:
    base, heavy = m["baseline_kl_epoch1"], m["kl_heavy_kl_epoch1"]
    how = ("lower" if heavy < base else "not lower")
    return (f"After one epoch the KL term is {base:.2f} nats in the baseline and {heavy:.2f} in the KL-heavy run: "
            f"with the heavier KL weight it is {how} from the start"
            + (", so the encoder is pushed towards q(z|x) = p(z) before it has learned to use x." if heavy < base
               else "; here the heavier weight did not suppress the KL early."))


def _cause_sentence(baseline_state: str, heavy_state: str) -> str:
    """What the two runs (same architecture and data, only the KL weight differs) say about the cause."""
    if heavy_state != "not collapsed" and baseline_state == "not collapsed":
        return ("The two runs share architecture, data and schedule and differ only in the KL weight, and only the "
                "KL-heavy one collapsed: here collapse comes from the objective's weighting, not from an "
                "over-powered decoder.")
    if heavy_state != "not collapsed":
        return ("Both runs collapsed, the baseline at the plain ELBO weighting too, so the weighting alone does not "
                "explain it here; a decoder that can model the images without z, or too little training, may.")
    return ("Neither run collapsed: at these settings even the heavier KL weight leaves the posterior informative, "
            "so this run shows no collapse to explain.")


# -- vae.mitigate -----------------------------------------------------------------------
def run_mitigate(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data = grayscale.load_data(cfg, ctx)
    runs = [train_variant(cfg, ctx, data, baseline(cfg), "baseline")]
    runs += [train_variant(cfg, ctx, data, v, variant_key(v.name)) for v in mitigation_variants(cfg)]
    figures = ctx.save_figure(mitigation_bars(runs), "mitigations")
    figures += ctx.save_figure(loss_curves(runs), "loss_curves")
    figures += ctx.save_figure(kl_per_dim_bars(runs), "kl_per_dim")
    samples = {r.variant.name: sample_prior(r.model, 10, cfg.latent_dim, ctx.device, cfg.seed, "gaussian") for r in runs}
    figures += ctx.save_figure(image_rows(samples, "samples from N(0, I), same noise for every variant"), "samples")
    treated = sorted(runs[1:], key=lambda r: (-r.diag["mutual_info"], r.diag["sse_posterior_mean"]))
    rank = {id(r): i + 1 for i, r in enumerate(treated)}
    table = {"title": f"Mitigations at KL weight {cfg.contrast_kl_weight:g}, ranked by I(x; z)",
             "columns": ["variant", "rank", "verdict", "active units", "I(x;z) nats", "KL nats", "recon SSE",
                         "-ELBO nats (Gaussian)"],
             "rows": [[r.variant.name, rank.get(id(r), "reference"), verdict(r.diag, cfg.latent_dim),
                       r.diag["active_units"], r.diag["mutual_info"], r.diag["kl"], r.diag["sse_posterior_mean"],
                       r.diag["neg_elbo_gaussian_nats"]] for r in [runs[0], *treated]]}
    metrics: dict[str, Any] = {}
    for run in runs:
        metrics.update(diag_metrics(run.diag, f"{variant_key(run.variant.name)}_"))
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": _notes(cfg),
            "ranking": [r.variant.name for r in treated], "untreated": runs[1].variant.name}


def discuss_mitigate(results: dict[str, Any]) -> list[str]:
    m, ranking = results["metrics"], results["ranking"]
    untreated = variant_key(results["untreated"])
    best = variant_key(ranking[0])
    text = [f"Ranked by I(x; z): {', '.join(ranking)}.",
            f"The best, {ranking[0]}, keeps {m[f'{best}_mutual_info']:.2f} nats of information about x in z "
            f"({m[f'{best}_active_units']:.0f} active units) where the untreated KL-heavy run keeps "
            f"{m[f'{untreated}_mutual_info']:.2f} ({m[f'{untreated}_active_units']:.0f} active units)."]
    helped = [n for n in ranking if m[f"{variant_key(n)}_mutual_info"] > m[f"{untreated}_mutual_info"] + 0.1]
    text.append(f"{len(helped)} of {len(ranking) - 1} mitigations raise I(x; z) by more than 0.1 nats over the "
                f"untreated run" + (f": {', '.join(helped)}." if helped else "."))
    return text


def _notes(cfg: Config) -> list[str]:
    out = [f"Model: the course VAE (MLP {28 * 28}-{cfg.hidden}-{cfg.latent_dim}, sigmoid decoder), Adam lr {cfg.lr}, "
           f"batch {cfg.batch_size}, {cfg.epochs} epochs. Loss: squared error summed over pixels plus KL, both "
           "averaged over the batch, the seed report's scaling.",
           f"Active units: Cov_x E[z_i|x] > {latent.ACTIVE_THRESHOLD}; I(x; z) estimated on {cfg.diag_samples} "
           "validation images, as in He et al. 2019: a Monte Carlo estimate whose scale is log N for the N "
           "images used (the most information an N-image mixture can carry); sampling noise can put it "
           "slightly above log N."]
    if cfg.data == "digits":
        out.append("Demo preset: scikit-learn's 8x8 digits upsampled to 28x28 stand in for FashionMNIST.")
    if cfg.data == "generated-fashion-mnist":
        out.append("Smoke preset: generated IDX files, not real FashionMNIST; numbers test the code path only.")
    return out


def bench(cfg: Config) -> dict[str, Any]:
    """The baseline VAE trained on atml's in-memory batches vs a per-sample PIL Dataset + DataLoader.

    Same data, batch order (DistributedSampler, same seed), initialisation and epochs, so
    both paths must end on the same loss.
    """
    from atml import bench as bench_lib

    def build() -> tuple[Any, ...]:
        model = vae_model.VAE(cfg.latent_dim, cfg.hidden).to(ctx.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        step = VAEStep(baseline(cfg), cfg.epochs, optimizer)
        return model, optimizer, step, [step]

    with bench_lib.scratch_context(cfg) as ctx:
        data = grayscale.load_data(cfg, ctx)
        timings, model = bench_lib.time_both_data_paths(data.train.images, cfg, ctx.device, build)
        x = data.train.images[:256].float().div(255).to(ctx.device)
        throughput = bench_lib.model_throughput(model, x, ctx.device, 256)
    return bench_lib.summarise(f"vae.train {len(data.train)} train images ({data.name}), {cfg.epochs} epochs, batch "
                               f"{cfg.batch_size}, device {ctx.device}", timings, throughput, "final train loss")


EXPERIMENTS = (
    Experiment("vae.train", "VAE on FashionMNIST: losses, reconstructions, Gaussian vs Laplace prior samples",
               Config, PRESETS, run_train, bench=bench, discuss=discuss_train),
    Experiment("vae.collapse", "VAE posterior collapse: KL per dimension, active units, I(x;z), prior vs posterior",
               Config, PRESETS, run_collapse, discuss=discuss_collapse),
    Experiment("vae.mitigate", "VAE collapse mitigations: KL warm-up, cyclical, free bits, aggressive encoder",
               Config, PRESETS, run_mitigate, discuss=discuss_mitigate),
)
