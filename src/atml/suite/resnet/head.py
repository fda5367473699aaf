"""``resnet.head``: train a new head on a frozen ResNet, for a sweep of input resolutions.

Full: torchvision ResNet-152 with ImageNet weights on CIFAR-10 at 32/64/128/224, 10
epochs (the course's Task 1.1). Demo: atml's small ResNet pretrained on digits 0-4,
head trained on digits 5-9 at 8 (native), 16 and 32 px (the pretraining resolution).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from atml import benchmark as bench_lib
from atml import figures, references
from atml.context import RunContext
from atml.data import factory as data_factory
from atml.models import cnn, freezing
from atml.models.preprocess import Preprocess
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Bench, Metrics, Results, RunResults, Table, counted, fixed, under
from atml.suite.resnet.common import (
    load_backbone,
    load_data,
    score_pretrained_head,
    train_head,
    weights_notes,
)
from atml.suite.resnet.config import HEAD_PRESETS as PRESETS
from atml.suite.resnet.config import HeadConfig as Config
from atml.train.loop import History
from atml.train.stages import training_problem


def run(cfg: Config, ctx: RunContext) -> Results:
    imagenet = data_factory.describe(cfg.data).imagenet_labels
    data = load_data(cfg, ctx, needs_train=not imagenet)
    backbone = load_backbone(cfg, ctx, num_classes=len(data.train.classes))
    out = Results()
    if imagenet:  # the weights' own head on its own classes, before a new one is trained
        numbers, said = score_pretrained_head(cfg, ctx, backbone, data)
        out.metrics.records += numbers
        out.notes += said
        if numbers:
            out.tables.append(pretrained_table(out.metrics, len(data.val)))
        if not len(data.train):
            out.notes.append(f"{cfg.data_dir} has no train/ folder: no new head was trained (the resolution sweep "
                             "needs training images).")
            out.keep(Data())
            return out
    model = freezing.freeze(backbone.model)  # built and frozen here; train_head moves it to the device
    for res in cfg.resolutions:  # every size before any training: a too-small one fails now, not after an hour
        cnn.check_input_size(model, res, cfg.arch)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    stages: dict[str, History] = {}
    for res in cfg.resolutions:
        stages[f"r{res}"], numbers = train_head(cfg, ctx, model, backbone, data, res)
        out.metrics.records += under(numbers, resolution=res)
    if backbone.info.source_val_acc is not None:
        out.add("pretrain_val_acc", backbone.info.source_val_acc)
    out.add_figures(ctx.save_figure(figures.training_curves(stages, title="head-only training per resolution"),
                                    "curves"))
    out.add_figures(ctx.save_figure(accuracy_vs_resolution(out.metrics, cfg), "accuracy_vs_resolution"))
    out.tables.append(resolution_table(cfg, out.metrics))
    problems = {stage: p for stage, rows in stages.items()
                if (p := training_problem(rows, len(data.train.classes), len(data.val)))}
    out.notes += notes(cfg, ctx) + [f"{stage}: {p}." for stage, p in problems.items()]
    out.keep(Data(problems))
    return out


@figures.styled
def accuracy_vs_resolution(metrics: Metrics, cfg: Config) -> Any:
    fig, axes = figures.figure(1, width=1.0, height=2.4)
    ax = axes[0][0]
    res = list(cfg.resolutions)
    final, best = metrics.by("val_acc", "resolution"), metrics.by("best_val_acc", "resolution")
    ax.plot(res, [final[r] for r in res], "o-", label=f"atml ({cfg.arch}, {cfg.data}) final")
    ax.plot(res, [best[r] for r in res], "x:", label="atml best epoch")
    comparable = cfg.data == "cifar10" and cfg.arch == "resnet152"
    seed = references.values(REFERENCES, "val_acc", "resolution", source="seed report") if comparable else {}
    if seed:  # another model or dataset: the course's points would sit on axes they do not belong to
        ax.plot(list(seed), list(seed.values()), "s", color="tab:red", mfc="none",
                label="seed report (CIFAR-10, ResNet-152)")
    ax.set_xscale("log", base=2)
    ticks = sorted({*res, *seed})
    ax.set_xticks(ticks, labels=[str(r) for r in ticks])
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    figures.legend_below(fig, ax.get_legend_handles_labels()[0], ncol=2)
    return fig


def resolution_table(cfg: Config, metrics: Metrics) -> Table:
    columns = ("train_acc", "val_acc", "best_val_acc", "backbone_images_per_s", "head_time_s")
    rows = [[r, *(metrics.get(name, resolution=r) for name in columns)] for r in cfg.resolutions]
    return Table("Head-only transfer per input resolution",
                 ["resolution", "train acc", "val acc", "best val acc", "backbone img/s", "head train s"], rows)


def pretrained_table(metrics: Metrics, images: int) -> Table:
    return Table(f"The weights' own head on the validation split ({images:,} images)", ["top-1", "top-5"],
                 [[metrics.get("pretrained_val_acc", top_k=1), metrics.get("pretrained_val_acc", top_k=5)]])


def notes(cfg: Config, ctx: RunContext) -> list[str]:
    out = [f"Backbone: {cfg.arch}; {counted(cfg.epochs, 'epoch')} of Adam (lr {cfg.lr}) on the head alone, "
           f"batch {cfg.batch_size}, backbone and its BatchNorm statistics frozen (folded into the convolutions)."]
    if data_factory.describe(cfg.data).demo:
        out.append("Demo preset: no ImageNet weights offline, so the backbone was pretrained by atml on "
                   "digits 0-4 and the head is trained on digits 5-9 (Yosinski et al. 2014 style split); "
                   "8 px is the native size, 32 px the pretraining size, mirroring CIFAR-10 32 px vs 224 px.")
    if data_factory.describe(cfg.data).generated:
        out.append(f"Generated {cfg.data.split('-', 1)[1]}-format files, not the real data: the numbers test the code "
                   "path only.")
    return out + weights_notes(ctx)


@dataclasses.dataclass
class Data:
    """resnet.head's own results data: the resolutions whose training cannot be read as a result (stage -> why)."""

    problems: dict[str, str] = dataclasses.field(default_factory=dict)


def discuss(results: RunResults) -> list[str]:
    """Sentences stating what this run's numbers show."""
    text = []
    if (top1 := results.metrics.get("pretrained_val_acc", top_k=1)) is not None:
        top5 = results.metrics.get("pretrained_val_acc", top_k=5)
        text.append(f"The weights' own head scores top-1 {top1:.4f} and top-5 {top5:.4f} on the validation split "
                    "(its own classes, before any training).")
    final = results.metrics.by("val_acc", "resolution")
    if not final:
        return text
    problems = results.read(Data).problems
    if problems:
        return [f"Not read as results: {', '.join(f'{s} ({p})' for s, p in problems.items())}; the resolution "
                "sweep is not summarised while a stage did not train."]
    res = sorted(final)
    lo, hi = res[0], res[-1]
    best = max(res, key=lambda r: final[r])
    text += [f"Validation accuracy goes from {final[lo]:.3f} at {lo} px to {final[hi]:.3f} at {hi} px; the best "
            f"resolution is {best} px ({final[best]:.3f})."]
    train = results.metrics.by("train_acc", "resolution")
    gaps = [train[r] - final[r] for r in res]
    text.append(f"The train-validation gap stays between {min(gaps):+.3f} and {max(gaps):+.3f}: "
                + ("the frozen features limit accuracy more than overfitting does." if max(gaps) < 0.05
                   else "the head overfits at some resolutions."))
    return text


def bench(cfg: Config) -> Bench:
    """Feature cache vs recomputing the backbone every epoch, same data, epochs and seed.

    Uses the experiment's own ``train_head`` for both paths, on a throw-away run folder,
    with randomly initialised weights (speed does not depend on the weight values).
    """
    res = max(cfg.resolutions)
    with bench_lib.scratch_context(cfg) as ctx:
        data = load_data(cfg, ctx)
        backbone = load_backbone(cfg, ctx, num_classes=len(data.train.classes))
        model = freezing.freeze(backbone.model).to(ctx.device)
        model = model.to(memory_format=torch.channels_last)
        timings = {}
        for label, cached in (("naive (backbone every epoch)", False), ("atml (feature cache)", True)):
            run_cfg = dataclasses.replace(cfg, feature_cache=cached)
            started = time.perf_counter()
            _, numbers = train_head(run_cfg, ctx, model, backbone, data, res)
            timings[label] = (time.perf_counter() - started, Metrics(numbers).value("val_acc"))
            for path in ctx.run.checkpoints.glob("*.pt"):
                path.unlink()
            ctx.run.prune_metrics(lambda r: False)
        prep = Preprocess(backbone.preprocessing, res, channels_last=True)
        throughput = bench_lib.backbone_throughput(model, prep, data.train.images, ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"resnet.head {cfg.arch} at {res}px, {len(data.train)} train images, "
                               f"{counted(cfg.epochs, 'epoch')}, device {ctx.device}, weights {cfg.weights}", timings,
                               throughput, chance=1 / len(data.train.classes))



def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    acc = m.by("val_acc", "resolution")
    return "val acc " + ", ".join(f"{fixed(acc[r])} at {r} px" for r in sorted(acc))



_CIFAR_HEAD = {"preset": "full", "data": "cifar10", "arch": "resnet152", "weights": "imagenet", "epochs": 10}

REFERENCES: tuple[Reference, ...] = (
    Reference("resnet.head", "head only, CIFAR-10 at 32x32, 10 epochs: val acc (seed report)", 0.4307,
              "seed report (Assignment 0)", "checked", "val_acc", 0.05, _CIFAR_HEAD, {"resolution": 32}),
    Reference("resnet.head", "head only, CIFAR-10 upsampled to 224x224, 10 epochs: val acc (seed report)",
              0.8717, "seed report (Assignment 0)", "checked", "val_acc", 0.05, _CIFAR_HEAD, {"resolution": 224}),
    Reference("resnet.head", "ImageNet ResNet logistic-regression probe on CIFAR-10 at 224", 0.915,
              "Kornblith et al. 2019, tables (about 90-93%)", "recalled", "val_acc", None, _CIFAR_HEAD,
              {"resolution": 224}),
    Reference("resnet.head", "ResNet-152 torchvision IMAGENET1K_V2 ImageNet-1k validation top-1 (resize 232, "
              "bilinear, centre crop 224)", 0.82284, "torchvision model docs (ResNet152_Weights)", "checked",
              "pretrained_val_acc", 0.005, {"preset": "full", "data": "imagenet", "arch": "resnet152",
                                            "weights": "imagenet", "val_limit": 0}, {"top_k": 1}),
    Reference("resnet.head", "ResNet-152 torchvision IMAGENET1K_V1 ImageNet-1k validation top-1 (resize 256, "
              "bilinear, centre crop 224)", 0.78312, "torchvision model docs (ResNet152_Weights)", "checked",
              "pretrained_val_acc", 0.005, {"preset": "full", "data": "imagenet", "arch": "resnet152",
                                            "weights": "imagenet-v1", "val_limit": 0}, {"top_k": 1}),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="resnet.head",
                        summary="ResNet head-only transfer with a frozen backbone, swept over input resolution",
                        config_cls=Config, presets=PRESETS, run=run, bench=bench, discuss=discuss,
                        readme_row=readme_row,
                        references=REFERENCES)
