"""``resnet.head``: train a new head on a frozen ResNet, for a sweep of input resolutions.

Full: torchvision ResNet-152 with ImageNet weights on CIFAR-10 at 32/64/128/224, 10
epochs (the course's Task 1.1). Demo: atml's small ResNet pretrained on digits 0-4,
head trained on digits 5-9 at 8 (native), 16 and 32 px (the pretraining resolution).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from atml import bench as bench_lib
from atml import runtime
from atml.config import RunConfig
from atml.data import ImageDataset, cifar10, digits
from atml.errors import UsageError
from atml.models import resnet
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.train import checkpoint, pretrain
from atml.train.features import FrozenFeatures, HeadOnFrozen, extract
from atml.train.loop import Batches, Fit, fit

DATA = ("cifar10", "digits", "generated-cifar10")
SEED_POINTS = {32: 0.4307, 224: 0.8717}  # seed report, ResNet-152 ImageNet head-only on CIFAR-10


@dataclasses.dataclass
class Config(RunConfig):
    data: str = "cifar10"
    """cifar10 (official batches) | digits (scikit-learn, classes 5-9) | generated-cifar10 (smoke)."""
    arch: str = "resnet152"
    """resnet152 | resnet50 | resnet18 | digits-resnet."""
    weights: str = "imagenet"
    """imagenet | imagenet-v1 | random | pretrain-digits (demo) | path to a state dict."""
    resolutions: tuple[int, ...] = (32, 64, 128, 224)
    """Input sizes the images are resized to; one head is trained per size."""
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    """Adam learning rate for the head."""
    weight_decay: float = 0.0
    feature_cache: bool = True
    """Run the frozen backbone once per resolution and train the head on cached features."""
    train_limit: int = 0
    """Use at most this many training images (0: all)."""
    val_limit: int = 0
    channels_last: bool = True
    amp: bool = True
    """bf16 autocast for the backbone on CUDA (ignored on CPU)."""
    pretrain_epochs: int = 8
    """Epochs of the digits 0-4 pretraining behind weights=pretrain-digits."""

    def validate(self) -> None:
        super().validate()
        if self.data not in DATA:
            raise UsageError(f"data={self.data!r} is not valid; choose one of {', '.join(DATA)}")
        if self.arch not in resnet.ARCHS:
            raise UsageError(f"arch={self.arch!r} is not valid; choose one of {', '.join(resnet.ARCHS)}")
        for name in ("epochs", "batch_size", "pretrain_epochs"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}={getattr(self, name)} is not valid; use an integer >= 1")
        if not self.resolutions or any(r < 4 or r > 1024 for r in self.resolutions):
            raise UsageError(f"resolutions={list(self.resolutions)} is not valid; use sizes in [4, 1024]")
        if not self.lr > 0 or self.weight_decay < 0:
            raise UsageError("lr must be > 0 and weight_decay >= 0")
        if self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("train_limit and val_limit must be >= 0 (0 means all)")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-cifar10", "arch": "resnet18", "weights": "random", "resolutions": (16, 32),
              "epochs": 2, "batch_size": 32},
    "demo": {"data": "digits", "arch": "digits-resnet", "weights": "pretrain-digits", "resolutions": (8, 16, 32),
             "epochs": 20, "batch_size": 64, "lr": 3e-3},
    "full": {},
}


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data = load_data(cfg, ctx)
    backbone = load_backbone(cfg, ctx, num_classes=len(data.train.classes))
    model = resnet.freeze(backbone.model.to(ctx.device))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    metrics: dict[str, Any] = {}
    stages: dict[str, list[dict[str, Any]]] = {}
    for res in cfg.resolutions:
        stages[f"r{res}"], stage_metrics = train_head(cfg, ctx, model, backbone, data, res)
        metrics.update(stage_metrics)
    figures = ctx.save_figure(plots.training_curves(stages, title="head-only training per resolution"), "curves")
    figures += ctx.save_figure(accuracy_vs_resolution(metrics, cfg), "accuracy_vs_resolution")
    if backbone.weights.source_val_acc is not None:
        metrics["pretrain_val_acc"] = backbone.weights.source_val_acc
    return {"metrics": metrics, "figures": figures, "tables": [resolution_table(cfg, metrics)],
            "notes": notes(cfg)}


def load_data(cfg: Config, ctx: RunContext) -> ImageDataset:
    """The dataset named by ``cfg.data``, subsampled by the limits; recorded in env.json."""
    if cfg.data == "cifar10":
        root = Path(cfg.data_dir) if cfg.data_dir else runtime.cache_dir() / "data"
        data = cifar10.load(root, offline=ctx.offline)
    elif cfg.data == "generated-cifar10":
        folder = cifar10.write_batches(ctx.run.path / "data", n_train=120, n_test=60, seed=cfg.seed)
        data = cifar10.load_generated(folder)
    else:
        data = digits.load(digits.TRANSFER_CLASSES, seed=cfg.seed)
    data.train = data.train.subset(cfg.train_limit, seed=cfg.seed)
    data.val = data.val.subset(cfg.val_limit, seed=cfg.seed + 1)
    ctx.record_source("data", {"name": data.name, "source": data.source, "train": len(data.train),
                               "val": len(data.val), "classes": data.train.classes})
    return data


def load_backbone(cfg: Config, ctx: RunContext, num_classes: int) -> resnet.Backbone:
    """The backbone with its weights; ``pretrain-digits`` trains (or reuses) the demo backbone."""
    if cfg.weights == "pretrain-digits":
        if cfg.arch != "digits-resnet":
            raise UsageError("weights=pretrain-digits needs arch=digits-resnet")
        recipe = pretrain.Recipe(epochs=cfg.pretrain_epochs, seed=cfg.seed)
        state, info = pretrain.digits_backbone(recipe, device=ctx.device, progress=ctx.progress, say=ctx.say)
        backbone = resnet.build(cfg.arch, num_classes, cfg.weights, offline=True, state=state, state_info=info)
    else:
        backbone = resnet.build(cfg.arch, num_classes, cfg.weights, offline=ctx.offline)
    ctx.record_source("weights", dataclasses.asdict(backbone.weights))
    return backbone


def new_head(in_features: int, num_classes: int, seed: int) -> torch.nn.Linear:
    """A head initialised from its own seed, so cached and uncached paths start identical."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Linear(in_features, num_classes)


def train_head(cfg: Config, ctx: RunContext, model: resnet.ResNetClassifier, backbone: resnet.Backbone,
               data: ImageDataset, res: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stage = f"r{res}"
    ckpt = ctx.checkpoint(f"head_{stage}")
    frozen = FrozenFeatures(resnet.Preprocess(res, backbone.mean, backbone.std, cfg.channels_last),
                            model.forward_features).to(ctx.device)
    head = new_head(model.num_features, len(data.train.classes), cfg.seed + res).to(ctx.device)
    out: dict[str, Any] = {}
    if _finished(ckpt, cfg.epochs):  # resumed run: this stage is complete, skip the backbone pass
        trainable, train_b, val_b = head, None, None
    elif cfg.feature_cache:
        started = time.perf_counter()
        kw = {"batch_size": max(cfg.batch_size, 256), "device": ctx.device, "amp": cfg.amp, "progress": ctx.progress}
        f_train, ips = extract(frozen, data.train.images, desc=f"{stage} features train", **kw)
        f_val, _ = extract(frozen, data.val.images, desc=f"{stage} features val", **kw)
        out[f"feature_time_s_{res}"] = time.perf_counter() - started
        out[f"backbone_images_per_s_{res}"] = ips
        trainable = head
        train_b = Batches((f_train, data.train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed + res)
        val_b = Batches((f_val, data.val.labels), 1024)
    else:
        trainable = HeadOnFrozen(frozen, head)
        train_b = Batches((data.train.images, data.train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed + res)
        val_b = Batches((data.val.images, data.val.labels), max(cfg.batch_size, 256))
        if ctx.device.type == "cuda":  # page-locked host memory: non-blocking copies overlap compute
            train_b, val_b = train_b.pin(), val_b.pin()
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    started = time.perf_counter()
    rows = fit(Fit(trainable, optimizer, train_b or _empty(), val_b, cfg.epochs, ctx.device, ctx.run,
                   stage=stage, checkpoint_path=ckpt, progress=ctx.progress, say=ctx.say,
                   autocast=lambda: runtime.autocast(ctx.device, cfg.amp)))
    out[f"head_time_s_{res}"] = time.perf_counter() - started
    return rows, {**_stage_metrics(rows, res), **out}


def _finished(ckpt: Path, epochs: int) -> bool:
    return ckpt.exists() and checkpoint.load(ckpt)["epoch"] >= epochs


def _empty() -> Batches:
    return Batches((torch.empty(0),), 1)


def _stage_metrics(rows: list[dict[str, Any]], res: int) -> dict[str, float]:
    val = [r for r in rows if r["phase"] == "val"]
    train = [r for r in rows if r["phase"] == "train"]
    return {f"val_acc_{res}": val[-1]["acc"], f"best_val_acc_{res}": max(r["acc"] for r in val),
            f"train_acc_{res}": train[-1]["acc"], f"val_loss_{res}": val[-1]["loss"]}


@plots.styled
def accuracy_vs_resolution(metrics: dict[str, Any], cfg: Config) -> Any:
    fig, axes = plots.figure(1, width=1.0, height=2.4)
    ax = axes[0][0]
    res = list(cfg.resolutions)
    ax.plot(res, [metrics[f"val_acc_{r}"] for r in res], "o-", label=f"atml ({cfg.arch}, {cfg.data}) final")
    ax.plot(res, [metrics[f"best_val_acc_{r}"] for r in res], "x:", label="atml best epoch")
    ax.plot(list(SEED_POINTS), list(SEED_POINTS.values()), "s", color="tab:red", mfc="none",
            label="seed report (CIFAR-10, ResNet-152)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({*res, *SEED_POINTS}), labels=[str(r) for r in sorted({*res, *SEED_POINTS})])
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def resolution_table(cfg: Config, metrics: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for r in cfg.resolutions:
        rows.append([r, metrics[f"train_acc_{r}"], metrics[f"val_acc_{r}"], metrics[f"best_val_acc_{r}"],
                     metrics.get(f"backbone_images_per_s_{r}"), metrics.get(f"head_time_s_{r}")])
    return {"title": "Head-only transfer per input resolution",
            "columns": ["resolution", "train acc", "val acc", "best val acc", "backbone img/s", "head train s"],
            "rows": rows}


def notes(cfg: Config) -> list[str]:
    out = [f"Backbone: {cfg.arch}; {cfg.epochs} epochs of Adam (lr {cfg.lr}) on the head alone, "
           f"batch {cfg.batch_size}, backbone and its BatchNorm statistics frozen."]
    if cfg.data == "digits":
        out.append("Demo preset: no ImageNet weights offline, so the backbone was pretrained by atml on "
                   "digits 0-4 and the head is trained on digits 5-9 (Yosinski et al. 2014 style split); "
                   "8 px is the native size, 32 px the pretraining size, mirroring CIFAR-10 32 px vs 224 px.")
    if cfg.data == "generated-cifar10":
        out.append("Smoke preset: generated CIFAR-10-format files, not real CIFAR-10; numbers test the code path only.")
    return out


def discuss(results: dict[str, Any]) -> list[str]:
    """Sentences stating what this run's numbers show."""
    m = results["metrics"]
    res = sorted(int(k.removeprefix("val_acc_")) for k in m if k.startswith("val_acc_"))
    if not res:
        return []
    lo, hi = res[0], res[-1]
    best = max(res, key=lambda r: m[f"val_acc_{r}"])
    text = [f"Validation accuracy goes from {m[f'val_acc_{lo}']:.3f} at {lo} px to {m[f'val_acc_{hi}']:.3f} "
            f"at {hi} px; the best resolution is {best} px ({m[f'val_acc_{best}']:.3f})."]
    gaps = [m[f"train_acc_{r}"] - m[f"val_acc_{r}"] for r in res]
    text.append(f"The train-validation gap stays between {min(gaps):+.3f} and {max(gaps):+.3f}: "
                + ("the frozen features limit accuracy more than overfitting does." if max(gaps) < 0.05
                   else "the head overfits at some resolutions."))
    return text


def bench(cfg: Config) -> dict[str, Any]:
    """Feature cache vs recomputing the backbone every epoch, same data, epochs and seed.

    Uses the experiment's own ``train_head`` for both paths, on a throw-away run folder,
    with randomly initialised weights (speed does not depend on the weight values).
    """
    cfg = dataclasses.replace(cfg, weights="random" if cfg.weights == "pretrain-digits" else cfg.weights)
    res = max(cfg.resolutions)
    with bench_lib.scratch_context(cfg) as ctx:
        data = load_data(cfg, ctx)
        backbone = load_backbone(cfg, ctx, num_classes=len(data.train.classes))
        model = resnet.freeze(backbone.model.to(ctx.device)).to(memory_format=torch.channels_last)
        timings = {}
        for label, cached in (("naive (backbone every epoch)", False), ("atml (feature cache)", True)):
            run_cfg = dataclasses.replace(cfg, feature_cache=cached)
            started = time.perf_counter()
            _, stage_metrics = train_head(run_cfg, ctx, model, backbone, data, res)
            timings[label] = (time.perf_counter() - started, stage_metrics[f"val_acc_{res}"])
            for path in ctx.run.checkpoints.glob("*.pt"):
                path.unlink()
            ctx.run.prune_metrics(lambda r: False)
        prep = resnet.Preprocess(res, backbone.mean, backbone.std)
        throughput = bench_lib.backbone_throughput(model, prep, data.train.images, ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"resnet.head {cfg.arch} at {res}px, {len(data.train)} train images, "
                               f"{cfg.epochs} epochs, device {ctx.device}, weights {cfg.weights} (speed only)", timings, throughput)


EXPERIMENTS = (
    Experiment(name="resnet.head",
               summary="ResNet head-only transfer with a frozen backbone, swept over input resolution",
               config_cls=Config, presets=PRESETS, run=run, bench=bench, discuss=discuss),
)
