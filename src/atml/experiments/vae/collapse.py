"""``vae.collapse``: posterior collapse in numbers, for the baseline and a KL-heavy contrast."""

from __future__ import annotations

from typing import Any

import torch

from atml.experiments import grayscale
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.experiments.vae import common


@plots.styled
def kl_heatmaps(runs: list[common.Trained]) -> Any:
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




def run(cfg: common.Config, ctx: RunContext) -> dict[str, Any]:
    data = grayscale.load_data(cfg, ctx)
    contrast = common.mitigation_variants(cfg)[0]
    runs = [common.train_variant(cfg, ctx, data, common.baseline(cfg), "baseline"),
            common.train_variant(cfg, ctx, data, contrast, "kl_heavy")]
    figures = ctx.save_figure(common.kl_per_dim_bars(runs), "kl_per_dim")
    figures += ctx.save_figure(kl_heatmaps(runs), "kl_per_dim_over_epochs")
    figures += ctx.save_figure(common.loss_curves(runs), "loss_curves")
    x = data.val.images[:10].float().div(255)
    rows = {"input": x}
    for run in runs:
        with torch.no_grad():
            mu, _ = run.model.encode(x.to(ctx.device))
            rows[f"{run.variant.name}: posterior mean"] = run.model.decode(mu).cpu()
            rows[f"{run.variant.name}: prior mean"] = run.model.decode(torch.zeros_like(mu)).cpu()
    figures += ctx.save_figure(common.image_rows(rows, "decoded from q(z|x) mean vs from the prior mean"), "posterior_vs_prior")
    metrics: dict[str, Any] = {}
    for run, prefix in zip(runs, ("baseline_", "kl_heavy_")):
        metrics.update(common.diag_metrics(run.diag, prefix))
        val = [r for r in run.rows if r["phase"] == "val"]
        metrics[f"{prefix}kl_epoch1"] = val[0]["kl"]
        metrics[f"{prefix}recon_epoch1"] = val[0]["recon"]
    table = {"title": "Posterior collapse in numbers (validation sample)",
             "columns": ["setting", "verdict", "active units", "I(x;z) nats", "KL nats", "mu spread",
                         "use of x", "KL epoch 1"],
             "rows": [[r.variant.name, common.verdict(r.diag, cfg.latent_dim), r.diag["active_units"], r.diag["mutual_info"],
                       r.diag["kl"], r.diag["mu_spread"], common.use_of_x(r.diag),
                       [x for x in r.rows if x["phase"] == "val"][0]["kl"]] for r in runs]}
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": common.notes(cfg),
            "verdicts": {r.variant.name: common.verdict(r.diag, cfg.latent_dim) for r in runs},
            "latent_dim": cfg.latent_dim}


def discuss(results: dict[str, Any]) -> list[str]:
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
    return common.verdict({k: m[f"{prefix}{k}"] for k in ("mutual_info", "kl", "active_units")}, latent_dim)


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


EXPERIMENT = Experiment(name="vae.collapse",
                        summary="VAE posterior collapse: KL per dimension, active units, I(x;z), prior vs posterior",
                        config_cls=common.Config, presets=common.PRESETS, run=run, discuss=discuss)
