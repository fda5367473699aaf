"""``resnet.skip``: remove the identity addition from chosen blocks and watch training suffer.

Four runs on the same data, seed and schedule:

* intact network, head only;            * skips removed, head only;
* intact network, those blocks + head;  * skips removed, those blocks + head,

the last two recording the gradient norm that reaches each stage, so the report shows
how the missing skips change gradient flow, not only that accuracy drops.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from matplotlib.lines import Line2D

from atml import figures
from atml.context import RunContext
from atml.models import freezing, resnet
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metric, Metrics, Results, RunResults, Table, counted, fixed, under
from atml.suite.resnet import common
from atml.suite.resnet.config import SKIP_PRESETS as PRESETS
from atml.suite.resnet.config import SkipConfig as Config
from atml.train.gradients import GradientFlow
from atml.train.loop import History
from atml.train.stages import training_problem

STAGES = ("layer1", "layer2", "layer3", "layer4")


VARIANTS = (  # (stage, skips removed, blocks trained)
    ("intact_head", False, False),
    ("ablated_head", True, False),
    ("intact_blocks", False, True),
    ("ablated_blocks", True, True),
)


def run(cfg: Config, ctx: RunContext) -> Results:
    data = common.load_data(cfg, ctx)
    backbone = common.load_backbone(cfg, ctx, num_classes=len(data.train.classes))
    blocks = list(cfg.blocks) or resnet.default_ablation(backbone.model)
    resnet.remove_skips(copy.deepcopy(backbone.model), blocks)  # refuse bad names before any training
    stages: dict[str, History] = {}
    out = Results()
    for stage, ablate, train_blocks in VARIANTS:
        model = copy.deepcopy(backbone.model)  # train_head / train_blocks freeze it, then move it
        if ablate:
            resnet.remove_skips(model, blocks)
        if train_blocks:
            flow = GradientFlow(model, {s: getattr(model.body, s) for s in STAGES},
                                {b: resnet.residual_blocks(model)[b] for b in blocks})
            try:
                rows, numbers = common.train_blocks(cfg, ctx, model, backbone, data, cfg.resolution, stage,
                                                    trainable=[f"body.{b}" for b in blocks], callbacks=[flow])
            finally:
                flow.close()
        else:
            freezing.freeze(model)
            rows, numbers = common.train_head(cfg, ctx, model, backbone, data, cfg.resolution, stage=stage)
        stages[stage] = rows
        out.metrics.records += under(numbers, variant=stage)
        out.add("val_acc_epoch1", rows.values("val", "acc")[0], variant=stage)
    out.metrics.records += gradient_summary(stages)
    out.add_figures(ctx.save_figure(figures.training_curves(stages, title=f"skips removed in {', '.join(blocks)}"),
                                    "curves"))
    out.add_figures(ctx.save_figure(gradient_figure(stages), "gradient_flow"))
    out.tables.append(table(out.metrics))
    curves = {s: stages[s].values("val", "acc") for s in ("intact_blocks", "ablated_blocks")}
    problems = {stage: p for stage, rows in stages.items()
                if (p := training_problem(rows, len(data.train.classes), len(data.val)))}
    out.keep(Data(list(blocks), curves, problems))
    out.notes.append(f"Skip connections removed in {', '.join(blocks)} (each block then computes relu(F(x))); "
                     f"{cfg.arch}, {cfg.resolution} px, {counted(cfg.epochs, 'epoch')}; trained blocks use lr "
                     f"{cfg.lr * cfg.backbone_lr_scale:g}, the head {cfg.lr:g}.")
    out.notes += common.weights_notes(ctx)
    return out


def gradient_summary(stages: dict[str, History]) -> list[Metric]:
    """Mean over epochs of the gradient norm arriving at each stage's output."""
    out = []
    for stage in ("intact_blocks", "ablated_blocks"):
        rows = [r for r in stages[stage].phase("train") if "grad_in" in r]
        for name in STAGES:
            values = [r["grad_in"][name] for r in rows if name in r["grad_in"]]
            if values:
                out.append(Metric("grad_in", sum(values) / len(values), condition={"layer": name, "variant": stage}))
    return out


def table(metrics: Metrics) -> Table:
    rows = []
    for stage, ablate, train_blocks in VARIANTS:
        seconds = metrics.get("train_time_s", variant=stage) or metrics.get("head_time_s", variant=stage)
        rows.append(["removed" if ablate else "intact", "blocks + head" if train_blocks else "head only",
                     *(metrics.get(n, variant=stage) for n in ("val_acc_epoch1", "val_acc", "best_val_acc",
                                                               "val_loss")),
                     seconds])
    return Table("Skip-connection ablation", ["skips", "trained", "val acc epoch 1", "final val acc", "best val acc",
                                               "final val loss", "train s"], rows)


@figures.styled
def gradient_figure(stages: dict[str, History]) -> Any:
    fig, axes = figures.figure(2, width=2.0, height=2.2, sharey=True)  # one scale: the panels compare
    drawn: set[str] = set()
    for ax, stage in zip(axes[0], ("intact_blocks", "ablated_blocks")):
        rows = [r for r in stages[stage].phase("train") if "grad_in" in r]
        for i, name in enumerate(STAGES):
            pts = [(r.epoch, r["grad_in"][name]) for r in rows if name in r["grad_in"]]
            if pts:
                ax.plot(*zip(*pts), "o-", color=figures.palette(i), label=f"output of {name}")
                drawn.add(name)
        ax.set_yscale("log")
        figures.log_axis(ax, "y")
        ax.set_title(f"{'skips removed' if stage.startswith('ablated') else 'intact'}: |dL/d(stage output)|")
        ax.set_xlabel("epoch")
        figures.epoch_axis(ax)
    axes[0][0].set_ylabel("gradient norm (mean per step)")
    figures.legend_below(fig, [Line2D([], [], color=figures.palette(i), marker="o", label=f"output of {name}")
                             for i, name in enumerate(STAGES) if name in drawn])
    return fig


@dataclasses.dataclass
class Data:
    """resnet.skip's own results data: the blocks ablated, each trained-blocks run's validation accuracy per epoch,
    and the stages whose training cannot be read as a result (stage -> why)."""

    blocks: list[str]
    val_curves: dict[str, list[float]]
    problems: dict[str, str] = dataclasses.field(default_factory=dict)


def discuss(results: RunResults) -> list[str]:
    m, data = results.metrics, results.read(Data)
    problems = data.problems
    blocks = ", ".join(data.blocks)
    text = [f"Not read as results: {', '.join(f'{s} ({p})' for s, p in problems.items())}."] if problems else []
    for trained, label in (("head", "with only the head trained"), ("blocks", "with the ablated blocks trained too")):
        if f"intact_{trained}" in problems or f"ablated_{trained}" in problems:
            continue
        a, b = m.value("val_acc", variant=f"intact_{trained}"), m.value("val_acc", variant=f"ablated_{trained}")
        text.append(f"{label.capitalize()}, removing the skips in {blocks} changes final "
                    f"validation accuracy from {a:.3f} to {b:.3f} ({b - a:+.3f}).")
    text.append(_catch_up(results))
    intact = m.by("grad_in", "layer", variant="intact_blocks")
    ablated = m.by("grad_in", "layer", variant="ablated_blocks")
    deepest = next((s for s in STAGES if s in intact and s in ablated), None)
    if deepest:
        ratio = ablated[deepest] / max(intact[deepest], 1e-12)
        text.append(f"The gradient reaching the output of {deepest} (the shallowest stage measured) is {ratio:.2f}x "
                    f"its size in the intact network: "
                    + ("without the identity path, less signal flows back through the ablated blocks."
                       if ratio < 1 else "here the ablation did not attenuate the gradient."))
    return text


def _catch_up(results: RunResults) -> str:
    """How many epochs each trained-blocks run needs to reach 90% of the intact run's final accuracy."""
    curves = results.read(Data).val_curves
    target = 0.9 * curves["intact_blocks"][-1]
    reach = {k: next((i + 1 for i, a in enumerate(v) if a >= target), None) for k, v in curves.items()}

    def fmt(epoch: int | None) -> str:
        return f"epoch {epoch}" if epoch else "never within the run"

    return (f"Training speed: after one epoch the intact network is at {curves['intact_blocks'][0]:.3f} and the "
            f"ablated one at {curves['ablated_blocks'][0]:.3f}; they reach 90% of the intact network's final "
            f"accuracy at {fmt(reach['intact_blocks'])} and {fmt(reach['ablated_blocks'])} respectively.")



def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""

    def v(variant: str) -> str:
        return fixed(m.value("val_acc", variant=variant))

    return (f"head only: {v('intact_head')} intact vs {v('ablated_head')} with skips removed; "
            f"training those blocks: {v('intact_blocks')} vs {v('ablated_blocks')}")



REFERENCES: tuple[Reference, ...] = (
    Reference("resnet.skip", "plain (no-skip) deep nets train worse than shallower plain nets; residual nets do not "
              "(plain-56 > plain-20 error on CIFAR-10)", None, "He et al. 2016, Fig. 6", "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="resnet.skip",
                        summary="ResNet with skip connections removed in chosen blocks: accuracy and gradient flow",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
