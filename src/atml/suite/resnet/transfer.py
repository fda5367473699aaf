"""``resnet.transfer``: {pretrained, random init} x {head only, last block + head, full fine-tuning}.

Every cell trains on the same data, seed and schedule and reports, besides its curves
and accuracies, what it cost: trainable parameters, wall time, training images/s and
peak memory, so the trade-off between compute and accuracy is a table. Head-only cells
use the feature cache; cells that train backbone blocks use random-crop (and flip)
augmentation. Under ``torchrun`` every cell trains with DistributedDataParallel.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from atml import figures, runtime
from atml.context import RunContext
from atml.data import ImageDataset
from atml.distributed import rank_and_world
from atml.models import cnn, freezing
from atml.models.preprocess import Preprocess
from atml.models.types import Built
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, counted, fixed
from atml.suite.resnet import common
from atml.suite.resnet.config import TRANSFER_PRESETS as PRESETS
from atml.suite.resnet.config import TransferConfig as Config
from atml.train.loop import History
from atml.train.stages import training_problem

INITS = ("pretrained", "random")
REGIMES = ("head", "last", "full")
REGIME_NAMES = {"head": "head only", "last": "last block + head", "full": "full fine-tuning"}


def run(cfg: Config, ctx: RunContext) -> Results:
    data = common.load_data(cfg, ctx)
    pretrained = common.load_backbone(cfg, ctx, len(data.train.classes))  # pretrained-file: factory.random_file
    random_init = ctx.model(cfg.arch, "random", family="cnn", seed=cfg.seed, source="random_weights",
                            num_classes=len(data.train.classes))
    stages: dict[str, History] = {}
    cells: list[dict[str, Any]] = []
    for cell in cfg.cells:
        init = cell.split(":")[0]
        stages[cell.replace(":", "_")], record = _train_cell(cfg, ctx, cell, pretrained if init == "pretrained"
                                                             else random_init, data)
        cells.append(record)
    out = Results()
    units = {"val_acc": "", "best_val_acc": "", "trainable_params": "", "time_s": "s", "images_per_s": "img/s",
             "peak_memory_mb": "MB"}
    for c in cells:
        for name, unit in units.items():
            out.add(name, c[name], unit, init=c["init"], regime=c["regime"])
    out.add_figures(ctx.save_figure(figures.training_curves(stages, title="transfer grid"), "curves"))
    out.add_figures(ctx.save_figure(compute_figure(cells), "accuracy_vs_compute"))
    out.notes += _notes(cfg, ctx, cells)
    out.tables.append(table(cells))
    out.keep(Data(cells))
    return out


def _train_cell(cfg: Config, ctx: RunContext, cell: str, backbone: Built[cnn.CNN],
                data: ImageDataset) -> tuple[History, dict[str, Any]]:
    """One ``init:regime`` cell trained from a copy of ``backbone``: its records, and what the grid reports."""
    init, regime = cell.split(":")
    stage = cell.replace(":", "_")
    runtime.reset_peak_memory(ctx.device)
    model = copy.deepcopy(backbone.model)  # train_head / train_blocks freeze it, then move it
    if init == "random":
        calibrate_random_init(model, backbone, data, cfg, ctx.device)
    if regime == "head":
        freezing.freeze(model)
        rows, numbers = common.train_head(cfg, ctx, model, backbone, data, cfg.resolution, stage=stage)
        stage_numbers = Metrics(numbers)
        seconds = stage_numbers.value("head_time_s") + (stage_numbers.get("feature_time_s") or 0.0)
    else:
        rows, numbers = common.train_blocks(cfg, ctx, model, backbone, data, cfg.resolution, stage,
                                            trainable=trained_parts(model, regime))
        stage_numbers = Metrics(numbers)
        seconds = stage_numbers.value("train_time_s")
    problem = training_problem(rows, len(data.train.classes), len(data.val))
    return rows, {"cell": cell, "init": init, "regime": regime, "stage": stage, "problem": problem,
                  "val_acc": stage_numbers.value("val_acc"), "best_val_acc": stage_numbers.value("best_val_acc"),
                  "trainable_params": freezing.trainable_parameters(model), "time_s": seconds,
                  "images_per_s": len(data.train) * cfg.epochs / max(seconds, 1e-9),
                  "peak_memory_mb": runtime.peak_memory_mb(ctx.device)}


def _notes(cfg: Config, ctx: RunContext, cells: list[dict[str, Any]]) -> list[str]:
    world = rank_and_world()[1]
    memory = "CUDA max allocated" if ctx.device.type == "cuda" else "process peak RSS (reset per cell)"
    notes = [f"{cfg.arch} at {cfg.resolution} px, "
             f"{counted(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, Adam lr {cfg.lr:g} "
             f"(backbone blocks x{cfg.backbone_lr_scale:g}); augmentation for trained blocks: "
             f"{'random crop' + (' + flip' if cfg.hflip else '') if cfg.augment else 'none'}; head-only cells train "
             f"on cached features. Peak memory: {memory}; {world} process(es).", *common.weights_notes(ctx)]
    if any(c["init"] == "random" for c in cells):
        notes.append("Random-init cells: before training, one pass over up to "
                     f"{CALIBRATION_IMAGES:,} training images (train mode, no gradients, no labels) sets every "
                     "BatchNorm's statistics to those of the random network's own activations (precise BN); "
                     "with the initial 0/1 statistics a frozen random network normalises nothing and its cells "
                     "stayed at chance.")
    return notes + [f"{c['cell']}: {c['problem']}; not ranked." for c in cells if c["problem"]]


CALIBRATION_IMAGES = 4096


def trained_parts(model: Any, regime: str) -> tuple[str, ...]:
    """Parameter prefixes a regime trains besides the head: none, the last stage (ResNet: layer4; other CNNs:
    the last stage and the layers after it), or the whole body."""
    return {"head": (), "last": tuple(model.last_paths), "full": ("body",)}[regime]


def calibrate_random_init(model: cnn.CNN, backbone: Built[cnn.CNN], data: Any, cfg: Config,
                          device: Any) -> None:
    """Give a randomly initialised network's BatchNorm layers the statistics of its own activations.

    At initialisation every running mean is 0 and every running variance 1, which are not the
    statistics of a random network's activations; frozen (or evaluated) with them, BatchNorm
    normalises nothing, activations grow through the depth, and the head sees features that
    barely differ between images: the random cells stayed at chance. One pass over (up to
    4,096) training images in train mode, without gradients or labels, sets exact averages
    (precise BN), as a random-feature baseline needs. The weights stay random.
    """
    from atml.train import pretrain

    prep = Preprocess(backbone.preprocessing, cfg.resolution, channels_last=cfg.channels_last)
    images = data.train.subset(CALIBRATION_IMAGES, seed=cfg.seed).images
    pipeline = torch.nn.Sequential(prep, model).to(device)
    pretrain.recalibrate_bn(pipeline, images, device, batch_size=max(cfg.batch_size, 128))


def table(cells: list[dict[str, Any]]) -> Table:
    return Table("Transfer grid: accuracy and what it cost",
                 ["init", "trained", "final val acc", "best val acc", "trainable params", "wall s", "train img/s",
                  "peak MB", "problem"],
                 [[c["init"], REGIME_NAMES[c["regime"]], c["val_acc"], c["best_val_acc"], c["trainable_params"],
                   c["time_s"], c["images_per_s"], c["peak_memory_mb"], c.get("problem") or ""] for c in cells])


@figures.styled
def compute_figure(cells: list[dict[str, Any]]) -> Any:
    fig, axes = figures.figure(1, width=1.0, height=2.6)
    ax = axes[0][0]
    markers = {"head": "o", "last": "s", "full": "^"}
    for c in cells:
        ax.scatter(c["time_s"], c["best_val_acc"], marker=markers[c["regime"]], s=18,
                   color=figures.palette(0 if c["init"] == "pretrained" else 3),
                   label=f"{c['init']}, {REGIME_NAMES[c['regime']]}" + (" (flagged)" if c.get("problem") else ""))
    ax.set_xscale("log")
    figures.log_axis(ax)
    ax.set_xlabel("wall time (s, log)")
    ax.set_ylabel("best validation accuracy")
    figures.legend_below(fig, ax.get_legend_handles_labels()[0], ncol=2)
    return fig


@dataclasses.dataclass
class Data:
    """resnet.transfer's own results data: one record per grid cell (init, regime, accuracies, cost, problem)."""

    cells: list[dict[str, Any]]


def discuss(results: RunResults) -> list[str]:
    data = results.read(Data)
    cells = {c["cell"]: c for c in data.cells}
    healthy = [c for c in data.cells if not c.get("problem")]
    text = []
    for regime in REGIMES:
        p, r = cells.get(f"pretrained:{regime}"), cells.get(f"random:{regime}")
        if p and r and not (p.get("problem") or r.get("problem")):
            text.append(f"{REGIME_NAMES[regime].capitalize()}: pretrained {p['best_val_acc']:.3f} vs random init "
                        f"{r['best_val_acc']:.3f} best validation accuracy "
                        f"({p['best_val_acc'] - r['best_val_acc']:+.3f}).")
    flagged = [c for c in data.cells if c.get("problem")]
    if flagged:
        text.append("Not compared or ranked, because their training cannot be read as a result: "
                    + "; ".join(f"{c['cell']} ({c['problem']})" for c in flagged) + ".")
    if healthy:
        ranked = sorted(healthy, key=lambda c: c["best_val_acc"] / max(c["time_s"], 1e-9), reverse=True)
        best = max(healthy, key=lambda c: c["best_val_acc"])
        text.append(f"Most accurate: {best['cell']} ({best['best_val_acc']:.3f}, {best['time_s']:.1f} s, "
                    f"{best['trainable_params']:,} trainable parameters). Most accuracy per second: "
                    f"{ranked[0]['cell']} ({ranked[0]['best_val_acc']:.3f} in {ranked[0]['time_s']:.1f} s).")
    return text



def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    parts = [f"{regime}: {fixed(m.value('best_val_acc', init='pretrained', regime=regime))} vs "
             f"{fixed(m.value('best_val_acc', init='random', regime=regime))}"
             for regime in ("head", "last", "full") if m.get("best_val_acc", init="pretrained", regime=regime)]
    return "best val acc, pretrained vs random init: " + "; ".join(parts)



_CIFAR_TRANSFER = {"preset": "full", "data": "cifar10", "arch": "resnet152", "weights": "imagenet"}

REFERENCES: tuple[Reference, ...] = (
    Reference("resnet.transfer", "full fine-tuning of ImageNet ResNets on CIFAR-10 (about 97-98%)", 0.975,
              "Kornblith et al. 2019, tables", "recalled", "best_val_acc", None, _CIFAR_TRANSFER,
              {"init": "pretrained", "regime": "full"}),
    Reference("resnet.transfer", "ImageNet ResNet logistic-regression probe on CIFAR-10 at 224 (about 90-93%)", 0.915,
              "Kornblith et al. 2019, tables", "recalled", "best_val_acc", None, _CIFAR_TRANSFER,
              {"init": "pretrained", "regime": "head"}),
    Reference("resnet.transfer", "fixed-feature / fine-tuned transfer accuracy tracks ImageNet accuracy (r)", 0.99,
              "Kornblith et al. 2019 (abstract; 0.96 for fine-tuning)", "checked"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="resnet.transfer",
                        summary="ResNet transfer grid: pretrained vs random x head / last block / full fine-tuning",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
