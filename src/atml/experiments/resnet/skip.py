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

from atml.errors import UsageError
from atml.experiments.resnet import common
from atml.models import resnet
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.train.gradients import GradientFlow

STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclasses.dataclass
class Config(common.ResNetConfig):
    resolution: int = 224
    blocks: tuple[str, ...] = ()
    """Blocks whose skip is removed, e.g. [layer3.1]; empty: one shape-preserving block in layer2, 3 and 4."""

    def validate(self) -> None:
        super().validate()
        if not 4 <= self.resolution <= 1024:
            raise UsageError(f"resolution={self.resolution} is not valid; use a size in [4, 1024]")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-cifar10", "arch": "resnet50", "weights": "random", "resolution": 32,
              "epochs": 2, "batch_size": 32},
    "demo": {"offline": True, "data": "digits", "arch": "digits-resnet", "weights": "pretrain-digits", "resolution": 32,
             "epochs": 8, "batch_size": 64, "lr": 3e-3, "hflip": False},
    "full": {"epochs": 5},
    "rehearsal": {"epochs": 5, "data": "rehearsal-cifar10", "weights": "random"},
}

VARIANTS = (  # (stage, skips removed, blocks trained)
    ("intact_head", False, False),
    ("ablated_head", True, False),
    ("intact_blocks", False, True),
    ("ablated_blocks", True, True),
)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data = common.load_data(cfg, ctx)
    backbone = common.load_backbone(cfg, ctx, num_classes=len(data.train.classes))
    blocks = list(cfg.blocks) or resnet.default_ablation(backbone.model)
    resnet.remove_skips(copy.deepcopy(backbone.model), blocks)  # refuse bad names before any training
    stages: dict[str, list[dict[str, Any]]] = {}
    metrics: dict[str, Any] = {}
    for stage, ablate, train_blocks in VARIANTS:
        model = copy.deepcopy(backbone.model)  # train_head / train_blocks freeze it, then move it
        if ablate:
            resnet.remove_skips(model, blocks)
        if train_blocks:
            flow = GradientFlow(model, {s: getattr(model.body, s) for s in STAGES},
                                {b: resnet.residual_blocks(model)[b] for b in blocks})
            try:
                rows, out = common.train_blocks(cfg, ctx, model, backbone, data, cfg.resolution, stage,
                                                trainable=[f"body.{b}" for b in blocks], callbacks=[flow])
            finally:
                flow.close()
        else:
            resnet.freeze(model)
            rows, out = common.train_head(cfg, ctx, model, backbone, data, cfg.resolution, stage=stage)
        stages[stage] = rows
        metrics.update({f"{k.rsplit('_', 1)[0]}_{stage}": v for k, v in out.items()})
    metrics.update(gradient_summary(stages))
    figures = ctx.save_figure(plots.training_curves(stages, title=f"skips removed in {', '.join(blocks)}"), "curves")
    figures += ctx.save_figure(gradient_figure(stages), "gradient_flow")
    curves = {s: [r["acc"] for r in stages[s] if r["phase"] == "val"] for s in ("intact_blocks", "ablated_blocks")}
    problems = {stage: p for stage, rows in stages.items()
                if (p := common.training_problem(rows, len(data.train.classes), len(data.val)))}
    return {"metrics": metrics, "figures": figures, "tables": [table(stages, metrics)], "blocks": blocks,
            "val_curves": curves, "problems": problems,
            "notes": [f"Skip connections removed in {', '.join(blocks)} (each block then computes relu(F(x))); "
                      f"{cfg.arch}, {cfg.resolution} px, {cfg.epochs} epochs; trained blocks use lr "
                      f"{cfg.lr * cfg.backbone_lr_scale:g}, the head {cfg.lr:g}."]}


def gradient_summary(stages: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Mean over epochs of the gradient norm arriving at each stage's output."""
    out = {}
    for stage in ("intact_blocks", "ablated_blocks"):
        rows = [r for r in stages[stage] if r["phase"] == "train" and "grad_in" in r]
        for name in STAGES:
            values = [r["grad_in"][name] for r in rows if name in r["grad_in"]]
            if values:
                out[f"grad_in_{name}_{stage}"] = sum(values) / len(values)
    return out


def table(stages: dict[str, list[dict[str, Any]]], metrics: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for stage, ablate, train_blocks in VARIANTS:
        val = [r for r in stages[stage] if r["phase"] == "val"]
        rows.append(["removed" if ablate else "intact", "blocks + head" if train_blocks else "head only",
                     val[0]["acc"], val[-1]["acc"], max(r["acc"] for r in val), val[-1]["loss"],
                     metrics.get(f"train_time_s_{stage}", metrics.get(f"head_time_s_{stage}"))])
    return {"title": "Skip-connection ablation",
            "columns": ["skips", "trained", "val acc epoch 1", "final val acc", "best val acc", "final val loss",
                        "train s"], "rows": rows}


@plots.styled
def gradient_figure(stages: dict[str, list[dict[str, Any]]]) -> Any:
    fig, axes = plots.figure(2, width=2.0, height=2.2)
    for ax, stage in zip(axes[0], ("intact_blocks", "ablated_blocks")):
        rows = [r for r in stages[stage] if r["phase"] == "train" and "grad_in" in r]
        for i, name in enumerate(STAGES):
            pts = [(r["epoch"], r["grad_in"][name]) for r in rows if name in r["grad_in"]]
            if pts:
                ax.plot(*zip(*pts), "o-", color=plots.palette(i), label=f"output of {name}")
        ax.set_yscale("log")
        ax.set_title(f"{'skips removed' if stage.startswith('ablated') else 'intact'}: |dL/d(stage output)|")
        ax.set_xlabel("epoch")
        plots.epoch_axis(ax)
    axes[0][0].set_ylabel("gradient norm (mean per step)")
    plots.legend_below(fig, [plots.Line2D([], [], color=plots.palette(i), marker="o", label=f"output of {name}")
                             for i, name in enumerate(STAGES)])
    return fig


def discuss(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    problems = results.get("problems") or {}
    text = [f"Not read as results: {', '.join(f'{s} ({p})' for s, p in problems.items())}."] if problems else []
    for trained, label in (("head", "with only the head trained"), ("blocks", "with the ablated blocks trained too")):
        if f"intact_{trained}" in problems or f"ablated_{trained}" in problems:
            continue
        a, b = m[f"val_acc_intact_{trained}"], m[f"val_acc_ablated_{trained}"]
        text.append(f"{label.capitalize()}, removing the skips in {', '.join(results['blocks'])} changes final "
                    f"validation accuracy from {a:.3f} to {b:.3f} ({b - a:+.3f}).")
    text.append(_catch_up(results))
    deepest = next((s for s in STAGES if f"grad_in_{s}_ablated_blocks" in m and f"grad_in_{s}_intact_blocks" in m),
                   None)
    if deepest:
        ratio = m[f"grad_in_{deepest}_ablated_blocks"] / max(m[f"grad_in_{deepest}_intact_blocks"], 1e-12)
        text.append(f"The gradient reaching the output of {deepest} (the shallowest stage measured) is {ratio:.2f}x "
                    f"its size in the intact network: "
                    + ("without the identity path, less signal flows back through the ablated blocks."
                       if ratio < 1 else "here the ablation did not attenuate the gradient."))
    return text


def _catch_up(results: dict[str, Any]) -> str:
    """How many epochs each trained-blocks run needs to reach 90% of the intact run's final accuracy."""
    rows = {r[0]: r for r in results["tables"][0]["rows"] if r[1] == "blocks + head"}
    curves = results["val_curves"]
    target = 0.9 * curves["intact_blocks"][-1]
    reach = {k: next((i + 1 for i, a in enumerate(v) if a >= target), None) for k, v in curves.items()}
    fmt = lambda e: f"epoch {e}" if e else "never within the run"  # noqa: E731
    return (f"Training speed: after one epoch the intact network is at {rows['intact'][2]:.3f} and the ablated one at "
            f"{rows['removed'][2]:.3f}; they reach 90% of the intact network's final accuracy at "
            f"{fmt(reach['intact_blocks'])} and {fmt(reach['ablated_blocks'])} respectively.")


EXPERIMENT = Experiment(name="resnet.skip",
                        summary="ResNet with skip connections removed in chosen blocks: accuracy and gradient flow",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss)
