"""``vae.train``: the course VAE (MSE + KL) with both terms logged, -ELBO in nats, reconstructions and prior samples."""

from __future__ import annotations

from typing import Any

import torch

from atml import benchmark as bench_lib
from atml.context import RunContext
from atml.models import factory
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Bench, Metrics, Results, RunResults, counted, fixed
from atml.suite import grayscale
from atml.suite.vae import common
from atml.suite.vae.config import PRESETS
from atml.suite.vae.config import VAEConfig as Config
from atml.train.vae_recipe import VAEStep


def run(cfg: Config, ctx: RunContext) -> Results:
    data = grayscale.load_data(cfg, ctx)
    trained = common.train_variant(cfg, ctx, data, common.baseline(cfg), "baseline")
    model, rows = trained.model, trained.rows
    test = data.val.images[:10]
    with torch.no_grad():
        x = trained.preprocess(test)
        recon = model(x).recon.cpu()
    n = 10
    out = Results(notes=common.notes(cfg, data), warnings=common.warnings(cfg, data))
    out.add_figures(ctx.save_figure(common.loss_curves([trained]), "loss_curves"))
    out.add_figures(ctx.save_figure(common.image_rows({"test images": x.cpu(), "reconstructions": recon}),
                                    "reconstructions"))
    samples = {
        "N(0, I)": common.sample_prior(model, n, cfg.latent_dim, ctx.device, cfg.seed, "gaussian"),
        "Laplace(0, 1/sqrt2)": common.sample_prior(model, n, cfg.latent_dim, ctx.device, cfg.seed, "laplace"),
        "decoded prior mean": model.decode(torch.zeros(1, cfg.latent_dim, device=ctx.device)).detach().cpu(),
    }
    out.add_figures(ctx.save_figure(common.image_rows(samples, "generations from the prior"), "generations"))
    out.add("train_loss", common.final(rows, "train", "mse_plus_kl"))
    out.add("val_loss", common.final(rows, "val", "mse_plus_kl"))
    out.add("val_recon", common.final(rows, "val", "recon"))
    out.add("val_kl", common.final(rows, "val", "kl"), "nats")
    out.metrics.records += common.diag_metrics(trained.diag)
    out.add("sample_pixel_std", float(samples["N(0, I)"].std(0).mean()), prior="gaussian")
    out.add("sample_pixel_std", float(samples["Laplace(0, 1/sqrt2)"].std(0).mean()), prior="laplace")
    return out


def discuss(results: RunResults) -> list[str]:
    v = results.metrics.value
    return [
        f"Final loss (MSE summed over pixels + KL, per image): train {v('train_loss'):.2f}, validation "
        f"{v('val_loss'):.2f}, of which reconstruction {v('val_recon'):.2f} and KL {v('val_kl'):.2f} nats.",
        f"As a likelihood bound: -ELBO = {v('neg_elbo_gaussian_nats'):.1f} nats/image under the Gaussian decoder "
        "(sigma^2 = 1/2) that the MSE loss implies, on the grey-level images (not comparable with NLLs of "
        "Bernoulli decoders on binarised images).",
        f"{v('active_units'):.0f} latent dimensions are active; I(x; z) is {v('mutual_info'):.2f} nats.",
        _prior_sentence(v("sample_pixel_std", prior="laplace"), v("sample_pixel_std", prior="gaussian")),
    ]


def _prior_sentence(laplace: float, gaussian: float) -> str:
    more = laplace > gaussian
    return (f"Laplace-prior samples vary {'more' if more else 'less'} across draws than Gaussian ones (mean pixel std "
            f"{laplace:.3f} vs {gaussian:.3f}) at equal variance"
            + (": the Laplace prior's heavier tails reach latent regions the encoder rarely uses." if more else
               ": at equal variance the Laplace prior puts more draws near 0, and here that outweighs its tails."))




def bench(cfg: Config) -> Bench:
    """The baseline VAE trained on atml's in-memory batches vs a per-sample PIL Dataset + DataLoader.

    Same data, batch order (DistributedSampler, same seed), initialisation and epochs, so
    both paths must end on the same loss.
    """
    def build() -> tuple[Any, ...]:
        built = factory.create("mlp-vae", family="vae", latent_dim=cfg.latent_dim, hidden=cfg.hidden)
        model, preprocess = built.model.to(ctx.device), built.preprocess.to(ctx.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        step = VAEStep(common.baseline(cfg), cfg.epochs, preprocess, optimizer)
        return model, optimizer, step, [step]

    with bench_lib.scratch_context(cfg) as ctx:
        data = grayscale.load_data(cfg, ctx)
        timings, model = bench_lib.time_both_data_paths(data.train.images, cfg, ctx.device, build)
        x = factory.create("mlp-vae", family="vae").preprocess.to(ctx.device)(data.train.images[:256])
        throughput = bench_lib.model_throughput(model, x, ctx.device, 256)
    return bench_lib.summarise(f"vae.train {len(data.train)} train images ({data.name}), "
                               f"{counted(cfg.epochs, 'epoch')}, batch "
                               f"{cfg.batch_size}, device {ctx.device}", timings, throughput, "final train loss")



def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    return (f"val MSE+KL {fixed(m.value('val_loss'), 1)} per image, {m.value('active_units'):.0f} active units, "
            f"I(x;z) {fixed(m.value('mutual_info'), 2)} nats")



_VAE_SEED = {"preset": "full", "data": "fashion-mnist", "epochs": 20, "latent_dim": 20, "kl_weight": 1.0}

REFERENCES: tuple[Reference, ...] = (
    Reference("vae.train", "FashionMNIST VAE, MSE (sum) + KL, 20 epochs: final train loss (seed report)", 23.11,
              "seed report (Assignment 0)", "checked", "train_loss", 1.5, _VAE_SEED),
    Reference("vae.train", "FashionMNIST VAE, MSE (sum) + KL, 20 epochs: final validation loss (seed report)", 23.31,
              "seed report (Assignment 0)", "checked", "val_loss", 1.5, _VAE_SEED),
    Reference("vae.train", "VAE (1 stochastic layer, k=1) test NLL on binarised MNIST, Bernoulli decoder: a different "
              "likelihood (binary pixels) from atml's Gaussian -ELBO on grey levels, so shown for scale only", 86.76,
              "Burda et al. 2016", "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(name="vae.train",
                        summary="VAE on FashionMNIST: losses, reconstructions, Gaussian vs Laplace prior samples",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss, bench=bench,
                        readme_row=readme_row,
                        references=REFERENCES)
