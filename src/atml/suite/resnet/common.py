"""What the ResNet experiments share: config fields, data, backbones, heads and fine-tuning.

``resnet.head``, ``resnet.skip``, ``resnet.features`` and ``resnet.transfer`` all read the
same datasets (CIFAR-10, the demo digits, generated smoke files), build backbones the same
way (torchvision weights, local files, or the demo's digits-pretrained net) and train
through the same two functions: :func:`train_head` (frozen backbone, optional feature
cache) and :func:`train_blocks` (some or all backbone blocks trainable, augmentation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atml import runtime, storage
from atml.context import RunContext
from atml.data import ImageDataset, digits
from atml.data import factory as data_factory
from atml.errors import DataError
from atml.models import cnn, registry
from atml.models.preprocess import Preprocess
from atml.models.types import Built
from atml.provenance import RANDOM_WEIGHTS_NOTE, WeightsInfo
from atml.results import Metric
from atml.run_dir import read_json
from atml.suite import datasets
from atml.suite.resnet.config import ResNetConfig
from atml.train import checkpoint, finetune
from atml.train.features import FrozenFeatures, HeadOnFrozen, extract
from atml.train.loop import Batches, Callback, Fit, History, fit
from atml.train.stages import new_head, stage_metrics


def load_data(cfg: ResNetConfig, ctx: RunContext, *, needs_train: bool = True) -> ImageDataset:
    """The dataset named by ``cfg.data`` (the dataset factory), subsampled by the limits; recorded in env.json.

    Image files (a folder, ImageNet) are decoded at the short side the weights are evaluated at
    (torchvision's 232 or 256, timm's ``input_size / crop_pct``) with their interpolation, and
    centre-cropped to their input size on the device, as their own pipeline does.
    """
    data = datasets.load(cfg, ctx, (weights_preprocessing(cfg),), generated=(120, 60),
                         digit_classes=digits.TRANSFER_CLASSES, limits=(cfg.train_limit, cfg.val_limit))
    if needs_train and not len(data.train):
        raise DataError(f"data={cfg.data} at {cfg.data_dir} has no training images (no train/ folder), and this "
                        "experiment trains on them: add DIR/train/<wnid>/*.JPEG, or use resnet.head, which scores the "
                        "weights' own ImageNet head on val/ alone")
    return data


def weights_notes(ctx: RunContext, source: str = "weights") -> list[str]:
    """The caveat every family prints for a run on random weights, from the weights the run recorded."""
    info = ctx.sources.get(source)
    return [RANDOM_WEIGHTS_NOTE] if isinstance(info, WeightsInfo) and not info.pretrained else []


def weights_preprocessing(cfg: ResNetConfig) -> registry.Preprocessing:
    """What the run's weights expect (the registry's entry; a file: the architecture's default)."""
    entry = registry.lookup("cnn", cfg.arch)
    chosen = entry.weights.get(cfg.weights)
    return chosen.preprocessing if chosen else entry.preprocessing


def load_backbone(cfg: ResNetConfig, ctx: RunContext, num_classes: int,
                  source_key: str = "weights") -> Built[cnn.CNN]:
    """The backbone with its weights (the model factory; ``digits`` trains or reuses the demo backbone). On ImageNet
    the weights' own classifier is kept beside the new head (:attr:`atml.models.types.Built.pretrained_head`)."""
    return ctx.model(cfg.arch, cfg.weights, family="cnn", seed=cfg.seed, epochs=cfg.pretrain_epochs,
                     source=source_key, num_classes=num_classes,
                     keep_head=data_factory.describe(cfg.data).imagenet_labels)


def score_pretrained_head(cfg: ResNetConfig, ctx: RunContext, backbone: Built[cnn.CNN],
                          data: ImageDataset) -> tuple[list[Metric], list[str]]:
    """Top-1 and top-5 of the weights' own classifier on the validation split (ImageNet: its own classes).

    The images are cropped to the weights' input size and normalised as their pipeline does;
    features come from the same batch-by-batch pass as the heads' (:func:`extract`). Returns
    the numbers (``pretrained_val_acc`` at ``top_k`` 1 and 5) and a note saying what was done,
    or no numbers and why not.
    """
    head, classes = backbone.pretrained_head, len(data.val.classes)
    if head is None or head.out_features != classes:
        have = "no classifier" if head is None else f"a {head.out_features}-class classifier"
        return [], [f"weights={cfg.weights} carry {have}, not one over the dataset's {classes} classes: the "
                    "pretrained head was not scored"]
    pre = backbone.preprocessing
    frozen = FrozenFeatures(Preprocess(pre, channels_last=cfg.channels_last), backbone.model,
                            compile=cfg.compile).to(ctx.device)
    started = time.perf_counter()
    features, ips = extract(frozen, data.val.images, batch_size=max(cfg.batch_size, 256), device=ctx.device,
                            amp=cfg.amp, progress=ctx.progress, desc="pretrained head val")
    correct = torch.zeros(2, dtype=torch.int64)
    head = head.float().eval()
    with torch.no_grad():
        for rows, labels in zip(features.split(8192), data.val.labels.split(8192), strict=True):
            top5 = head(rows.float()).topk(min(5, classes), dim=1).indices
            hits = top5 == labels[:, None]
            correct += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])
    n = len(data.val)
    numbers = [Metric("pretrained_val_acc", correct[0].item() / n, condition={"top_k": 1}),
               Metric("pretrained_val_acc", correct[1].item() / n, condition={"top_k": 5}),
               Metric("pretrained_eval_images_per_s", ips, "img/s"),
               Metric("pretrained_eval_s", time.perf_counter() - started, "s")]
    note = (f"The weights' own {classes}-class head scored on {n:,} validation images before any training: "
            f"short side {data.val.images.shape[-1]} px ({pre.interpolation}), centre crop {pre.input_size}, "
            f"mean {tuple(round(m, 3) for m in pre.mean)}, std {tuple(round(v, 3) for v in pre.std)}.")
    return numbers, [note]


def _head_inputs(cfg: ResNetConfig, ctx: RunContext, frozen: FrozenFeatures, head: torch.nn.Module,
                 data: ImageDataset, res: int, stage: str,
                 done_before: bool) -> tuple[torch.nn.Module, Batches | None, Batches | None, list[Metric]]:
    """What the head trains as and on: the bare head on features extracted once (``feature_cache``, with the
    extraction's time and rate), else the head on its frozen backbone over the images; no batches for a stage a
    resumed run already finished (the checkpoint holds what was trained)."""
    if done_before:
        return (head if cfg.feature_cache else HeadOnFrozen(frozen, head)), None, None, []
    if cfg.feature_cache:
        started = time.perf_counter()
        kw: dict[str, Any] = {"batch_size": max(cfg.batch_size, 256), "device": ctx.device, "amp": cfg.amp,
                              "progress": ctx.progress}
        f_train, ips = extract(frozen, data.train.images, desc=f"{stage} features train", **kw)
        f_val, _ = extract(frozen, data.val.images, desc=f"{stage} features val", **kw)
        timing = [Metric("feature_time_s", time.perf_counter() - started, "s"),
                  Metric("backbone_images_per_s", ips, "img/s")]
        train_b = Batches((f_train, data.train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed + res)
        return head, train_b, Batches((f_val, data.val.labels), 1024), timing
    train_b = Batches((data.train.images, data.train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed + res)
    val_b = Batches((data.val.images, data.val.labels), max(cfg.batch_size, 256))
    if ctx.device.type == "cuda":  # page-locked host memory: non-blocking copies overlap compute
        train_b, val_b = train_b.pin(), val_b.pin()
    return HeadOnFrozen(frozen, head), train_b, val_b, []


def train_head(cfg: ResNetConfig, ctx: RunContext, model: cnn.CNN, backbone: Built[cnn.CNN],
               data: ImageDataset, res: int, stage: str | None = None) -> tuple[History, list[Metric]]:
    """Train a fresh head on the frozen ``model`` at resolution ``res`` (feature cache or not).

    Returns the stage's records and its numbers (accuracies, losses, feature and head time,
    backbone images/s) without conditions: the caller places them in its grid.

    Under torchrun the feature extraction is sharded across ranks and gathered, the batches
    are sharded and the head trains with DistributedDataParallel (see :mod:`atml.train.loop`).
    """
    stage = stage or f"r{res}"
    cnn.check_input_size(model, res, cfg.arch)
    ckpt = ctx.checkpoint(f"head_{stage}")
    frozen = FrozenFeatures(Preprocess(backbone.preprocessing, res, channels_last=cfg.channels_last), model,
                            compile=cfg.compile).to(ctx.device)
    head = new_head(model.num_features, len(data.train.classes), cfg.seed + res).to(ctx.device)
    timing = ckpt.with_suffix(".timing.json")  # the stage's times, kept for a resumed run that skips the stage
    done_before = finished(ckpt, cfg.epochs)
    trainable, train_b, val_b, out = _head_inputs(cfg, ctx, frozen, head, data, res, stage, done_before)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    started = time.perf_counter()
    rows = fit(Fit(trainable, optimizer, train_b or _empty(),
                   val_b, cfg.epochs, ctx.device, ctx.run, stage=stage, checkpoint_path=ckpt, progress=ctx.progress,
                   say=ctx.say,
                   autocast=lambda: runtime.autocast(ctx.device, cfg.amp)))
    out.append(Metric("head_time_s", time.perf_counter() - started, "s"))
    if done_before and timing.is_file():
        out = [Metric(name, value, unit) for name, value, unit in read_json(timing)["records"]]
    elif ctx.is_main:
        storage.write_json(timing, {"records": [[m.name, m.value, m.unit] for m in out]})
    return rows, [*stage_metrics(rows), *out]


def finished(ckpt: Path, epochs: int) -> bool:
    return ckpt.exists() and checkpoint.load(ckpt)["epoch"] >= epochs


def _empty() -> Batches:
    return Batches((torch.empty(0),), 1)




def finetune_pipeline(cfg: ResNetConfig, model: cnn.CNN, backbone: Built[cnn.CNN],
                      num_classes: int, res: int, trainable: Sequence[str],
                      device: torch.device) -> tuple[finetune.Pipeline, torch.optim.Optimizer]:
    """:func:`atml.train.finetune.pipeline` with the run's settings; the head seeded as :func:`train_head`'s."""
    cnn.check_input_size(model, res, cfg.arch)
    return finetune.pipeline(model, backbone.preprocessing, num_classes=num_classes, res=res, trainable=trainable,
                             seed=cfg.seed + res, lr=cfg.lr, backbone_lr_scale=cfg.backbone_lr_scale,
                             weight_decay=cfg.weight_decay, augment=cfg.augment, hflip=cfg.hflip,
                             channels_last=cfg.channels_last, device=device)


def train_blocks(cfg: ResNetConfig, ctx: RunContext, model: cnn.CNN, backbone: Built[cnn.CNN],
                 data: ImageDataset, res: int, stage: str, trainable: Sequence[str],
                 callbacks: Sequence[Callback] = ()) -> tuple[History, list[Metric]]:
    """Train the head plus the named backbone parts (prefixes like ``body.layer4``); the rest frozen.

    Under torchrun the pipeline trains with DistributedDataParallel (BatchNorm synchronised
    across GPUs).
    """
    pipeline, optimizer = finetune_pipeline(cfg, model, backbone, len(data.train.classes), res, trainable, ctx.device)
    train_b = Batches((data.train.images, data.train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed + res)
    val_b = Batches((data.val.images, data.val.labels), max(cfg.batch_size, 256))
    if ctx.device.type == "cuda":
        train_b, val_b = train_b.pin(), val_b.pin()
    started = time.perf_counter()
    rows = fit(Fit(pipeline, optimizer, train_b, val_b, cfg.epochs, ctx.device, ctx.run,
                   stage=stage, checkpoint_path=ctx.checkpoint(stage), callbacks=callbacks, progress=ctx.progress,
                   say=ctx.say, autocast=lambda: runtime.autocast(ctx.device, cfg.amp)))
    return rows, [*stage_metrics(rows), Metric("train_time_s", time.perf_counter() - started, "s")]
