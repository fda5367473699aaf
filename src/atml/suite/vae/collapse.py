"""``vae.collapse``: posterior collapse in numbers, for the baseline and a KL-heavy contrast."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from atml import figures
from atml.context import RunContext
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite import grayscale
from atml.suite.vae import common
from atml.suite.vae.config import PRESETS
from atml.suite.vae.config import VAEConfig as Config


@figures.styled
def kl_heatmaps(runs: list[common.Trained]) -> Any:
    """KL per latent dimension (rows) per epoch (columns): where collapse sets in."""
    fig, axes = figures.figure(len(runs), width=2.0, height=2.0)
    for ax, run in zip(axes[0], runs):
        pts = run.rows.phase("val")
        grid = torch.tensor([r["kl_per_dim"] for r in pts]).T  # (latent, epochs)
        image = ax.imshow(grid.numpy(), aspect="auto", cmap="magma", origin="lower",
                          extent=(0.5, len(pts) + 0.5, -0.5, grid.shape[0] - 0.5))
        ax.set_title(run.variant.name, fontsize=7)
        ax.set_xlabel("epoch")
        figures.epoch_axis(ax)
        ax.set_ylabel("latent dimension")
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="val KL (nats)")
    fig.tight_layout()
    return fig




def run(cfg: Config, ctx: RunContext) -> Results:
    data = grayscale.load_data(cfg, ctx)
    contrast = common.mitigation_variants(cfg)[0]
    runs = [common.train_variant(cfg, ctx, data, common.baseline(cfg), "baseline"),
            common.train_variant(cfg, ctx, data, contrast, "kl_heavy")]
    out = Results(notes=common.notes(cfg, data), warnings=common.warnings(cfg, data))
    out.add_figures(ctx.save_figure(common.kl_per_dim_bars(runs), "kl_per_dim"))
    out.add_figures(ctx.save_figure(kl_heatmaps(runs), "kl_per_dim_over_epochs"))
    out.add_figures(ctx.save_figure(common.loss_curves(runs), "loss_curves"))
    x = runs[0].preprocess(data.val.images[:10]).cpu()
    rows = {"input": x}
    for run in runs:
        with torch.no_grad():
            mu, _ = run.model.encode(x.to(ctx.device))
            rows[f"{run.variant.name}: posterior mean"] = run.model.decode(mu).cpu()
            rows[f"{run.variant.name}: prior mean"] = run.model.decode(torch.zeros_like(mu)).cpu()
    out.add_figures(ctx.save_figure(common.image_rows(rows, "decoded from q(z|x) mean vs from the prior mean"),
                                    "posterior_vs_prior"))
    for run, setting in zip(runs, SETTINGS):
        out.metrics.records += common.diag_metrics(run.diag, f"{setting}_", setting=setting)
        val = run.rows.phase("val")
        out.add("kl_epoch1", val[0]["kl"], "nats", setting=setting, key=f"{setting}_kl_epoch1")
        out.add("recon_epoch1", val[0]["recon"], setting=setting, key=f"{setting}_recon_epoch1")
    out.tables.append(Table("Posterior collapse in numbers (validation sample)",
                            ["setting", "verdict", "active units", "I(x;z) nats", "KL nats", "mu spread", "use of x",
                             "KL epoch 1"],
                            [[r.variant.name, common.verdict(r.diag, cfg.latent_dim), r.diag["active_units"],
                              r.diag["mutual_info"], r.diag["kl"], r.diag["mu_spread"], common.use_of_x(r.diag),
                              r.rows.values("val", "kl")[0]] for r in runs]))
    out.keep(Data(cfg.latent_dim, {r.variant.name: common.verdict(r.diag, cfg.latent_dim) for r in runs}))
    return out


@dataclasses.dataclass
class Data:
    """vae.collapse's own results data: each setting's verdict and the latent size the verdicts are out of."""

    latent_dim: int
    verdicts: dict[str, str] = dataclasses.field(default_factory=dict)


SETTINGS = ("baseline", "kl_heavy")
"""The two runs: the course's KL weight, and the KL-heavy contrast."""


def _value(metrics: Any, key: str, *, setting: str) -> float:
    result: float = metrics.value(key, setting=setting)
    return result


def discuss(results: RunResults) -> list[str]:
    m, latent_dim = results.metrics, results.read(Data).latent_dim
    text = []
    for setting, name in zip(SETTINGS, ("the baseline", "the KL-heavy setting")):
        v = functools.partial(_value, m, setting=setting)
        text.append(
            f"In {name} the posterior is {_state(m, setting, latent_dim)}: {v('active_units'):.0f}/{latent_dim} active "
            f"units, I(x; z) = {v('mutual_info'):.2f} nats, KL = {v('kl'):.2f} nats; decoding the "
            f"posterior mean instead of the prior mean removes {v('use_of_x'):.0%} of the reconstruction "
            "error" + (" - the decoder barely uses z." if v("use_of_x") < 0.2 else "."))
    text.append(_early_kl_sentence(m.value("kl_epoch1", setting="baseline"), m.value("kl_epoch1", setting="kl_heavy")))
    text.append(_cause_sentence(_state(m, "baseline", latent_dim), _state(m, "kl_heavy", latent_dim)))
    return text


def _state(m: Metrics, setting: str, latent_dim: int) -> str:
    return common.verdict({k: m.value(k, setting=setting) for k in ("mutual_info", "kl", "active_units")}, latent_dim)


def _early_kl_sentence(base: float, heavy: float) -> str:
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



def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""

    def v(name: str, setting: str) -> float:
        return m.value(name, setting=setting)

    return (f"I(x;z) {fixed(v('mutual_info', 'baseline'), 2)} nats at KL weight 1 vs "
            f"{fixed(v('mutual_info', 'kl_heavy'), 2)} KL-heavy; active units {v('active_units', 'baseline'):.0f} vs "
            f"{v('active_units', 'kl_heavy'):.0f}")



REFERENCES: tuple[Reference, ...] = (
    Reference("vae.collapse", "active unit threshold Cov_x(E_q[z_i]) (the rule atml applies)", 0.01,
              "Burda et al. 2016; jxhe/vae-lagging-encoder calc_au", "checked"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="vae.collapse",
                        summary="VAE posterior collapse: KL per dimension, active units, I(x;z), prior vs posterior",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss,
                        readme_row=readme_row,
                        references=REFERENCES)
