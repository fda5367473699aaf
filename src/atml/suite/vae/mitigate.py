"""``vae.mitigate``: KL warm-up, cyclical annealing, free bits and aggressive encoder updates, ranked."""

from __future__ import annotations

import dataclasses
from typing import Any

from atml import figures
from atml.context import RunContext
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite import grayscale
from atml.suite.vae import common
from atml.suite.vae.config import PRESETS
from atml.suite.vae.config import VAEConfig as Config


@figures.styled
def mitigation_bars(runs: list[common.Trained]) -> Any:
    keys = (("active_units", "active units"), ("mutual_info", "I(x; z) (nats)"), ("kl", "KL (nats)"),
            ("sse_posterior_mean", "reconstruction SSE"))
    fig, axes = figures.figure(len(keys), width=2.0, height=2.2)
    names = [r.variant.name for r in runs]
    for ax, (key, label) in zip(axes[0], keys):
        ax.barh(range(len(runs)), [r.diag[key] for r in runs], color=[f"C{i}" for i in range(len(runs))])
        ax.set_title(label)
        ax.set_yticks(range(len(runs)), labels=names if ax is axes[0][0] else [""] * len(runs), fontsize=6)
        ax.invert_yaxis()
    fig.tight_layout()
    return fig




def run(cfg: Config, ctx: RunContext) -> Results:
    data = grayscale.load_data(cfg, ctx)
    runs = [common.train_variant(cfg, ctx, data, common.baseline(cfg), "baseline")]
    runs += [common.train_variant(cfg, ctx, data, v, common.variant_key(v.name))
             for v in common.mitigation_variants(cfg)]
    out = Results(notes=common.notes(cfg, data), warnings=common.warnings(cfg, data))
    out.add_figures(ctx.save_figure(mitigation_bars(runs), "mitigations"))
    out.add_figures(ctx.save_figure(common.loss_curves(runs), "loss_curves"))
    out.add_figures(ctx.save_figure(common.kl_per_dim_bars(runs), "kl_per_dim"))
    samples = {r.variant.name: common.sample_prior(r.model, 10, cfg.latent_dim, ctx.device, cfg.seed, "gaussian")
               for r in runs}
    out.add_figures(ctx.save_figure(common.image_rows(samples, "samples from N(0, I), same noise for every variant"),
                                    "samples"))
    treated = sorted(runs[1:], key=lambda r: (-r.diag["mutual_info"], r.diag["sse_posterior_mean"]))
    rank = {id(r): i + 1 for i, r in enumerate(treated)}
    out.tables.append(Table(f"Mitigations at KL weight {cfg.contrast_kl_weight:g}, ranked by I(x; z)",
                            ["variant", "rank", "verdict", "active units", "I(x;z) nats", "KL nats", "recon SSE",
                             "-ELBO nats (Gaussian)"],
                            [[r.variant.name, rank.get(id(r), "reference"), common.verdict(r.diag, cfg.latent_dim),
                              r.diag["active_units"], r.diag["mutual_info"], r.diag["kl"], r.diag["sse_posterior_mean"],
                              r.diag["neg_elbo_gaussian_nats"]] for r in [runs[0], *treated]]))
    for run in runs:
        out.metrics.records += common.diag_metrics(run.diag, f"{common.variant_key(run.variant.name)}_",
                                                   variant=run.variant.name)
    out.keep(Data([r.variant.name for r in treated], runs[1].variant.name))
    return out


@dataclasses.dataclass
class Data:
    """vae.mitigate's own results data: the treated variants ranked by I(x;z), and the untreated reference."""

    ranking: list[str]
    untreated: str


def discuss(results: RunResults) -> list[str]:
    data = results.read(Data)
    m, ranking, untreated = results.metrics, data.ranking, data.untreated

    def mi(name: str) -> float:
        return m.value("mutual_info", variant=name)

    def units(name: str) -> float:
        return m.value("active_units", variant=name)

    best = ranking[0]
    text = [f"Ranked by I(x; z): {', '.join(ranking)}.",
            f"The best, {best}, keeps {mi(best):.2f} nats of information about x in z "
            f"({units(best):.0f} active units) where the untreated KL-heavy run keeps "
            f"{mi(untreated):.2f} ({units(untreated):.0f} active units)."]
    helped = [n for n in ranking if mi(n) > mi(untreated) + 0.1]
    text.append(f"{len(helped)} of {len(ranking) - 1} mitigations raise I(x; z) by more than 0.1 nats over the "
                f"untreated run" + (f": {', '.join(helped)}." if helped else "."))
    return text



def readme_row(m: Metrics, data: Data) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""

    def mi(name: str) -> str:
        return fixed(m.value("mutual_info", variant=name), 2)

    return (f"I(x;z) in nats, untreated {data.untreated}: {mi(data.untreated)}; ranked: "
            + ", ".join(f"{name} {mi(name)}" for name in data.ranking))


EXPERIMENT = Experiment(data=Data, name="vae.mitigate",
                        summary="VAE collapse mitigations: KL warm-up, cyclical, free bits, aggressive encoder",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss,
                        readme_row=readme_row)
