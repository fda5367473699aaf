"""``vit.pooling``: linear probes on the frozen ViT, the CLS token vs the mean of the patch tokens.

Both probes train on features computed once (the feature cache), with the same seed and
optimiser.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from atml import benchmark as bench_lib
from atml import figures, runtime
from atml.context import RunContext
from atml.data import digits
from atml.models import vit
from atml.provenance import WeightsInfo
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Bench, Metric, Metrics, Results, RunResults, Table, counted, fixed, under
from atml.suite.vit import common
from atml.suite.vit.config import POOLING_PRESETS as PRESETS
from atml.suite.vit.config import PoolingConfig
from atml.train.features import FrozenFeatures, extract
from atml.train.loop import Batches, Fit, History, fit
from atml.train.stages import new_head, stage_metrics


def run(cfg: PoolingConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    data = common.load_labelled(cfg, ctx, model, digit_classes=digits.TRANSFER_CLASSES)
    train = data.train.subset(cfg.train_limit, seed=cfg.seed)
    val = data.val.subset(cfg.val_limit, seed=cfg.seed + 1)
    frozen = FrozenFeatures(model.preprocess, model, vit.pooled_features, cfg.compile).to(ctx.device)
    started = time.perf_counter()
    kw: dict[str, Any] = {"batch_size": max(cfg.batch_size, 128), "device": ctx.device, "progress": ctx.progress}
    f_train, ips = extract(frozen, train.images, desc="features train", **kw)
    f_val, _ = extract(frozen, val.images, desc="features val", **kw)
    out = Results(notes=common.source_notes(cfg, ctx))
    out.add("feature_time_s", time.perf_counter() - started, "s")
    out.add("backbone_images_per_s", ips, "img/s")
    dim = model.num_features
    stages = {}
    for i, name in enumerate(vit.POOLINGS):
        cols = slice(i * dim, (i + 1) * dim)
        stages[name], numbers = train_probe(cfg, ctx, f_train[:, cols], train.labels, f_val[:, cols], val.labels,
                                            name)
        out.metrics.records += under(numbers, pooling=name)
    m = out.metrics
    out.add("cls_minus_mean_val_acc", m.value("val_acc", pooling="cls") - m.value("val_acc", pooling="mean"))
    curves = figures.training_curves(stages, title="linear probes: CLS token vs mean of patches")
    out.add_figures(ctx.save_figure(curves, "probe_curves"))
    notes = out.notes
    notes.append(f"Both probes: one linear layer on frozen, cached features ({train.images.shape[-1]}px "
                 f"{data.name}, {len(train)} train / {len(val)} val images), same initialisation seed, Adam lr "
                 f"{cfg.lr}, {counted(cfg.epochs, 'epoch')}, batch {cfg.batch_size}. CLS = the final class token "
                 "after the last norm; "
                 "mean = the average of the final patch tokens"
                 + (f" (the {model.num_prefix_tokens - 1} register tokens are in neither)."
                    if model.num_prefix_tokens > 1 else "."))
    weights = ctx.sources.get("weights")
    if isinstance(weights, WeightsInfo) and weights.demo:
        notes.append("Demo: the ViT was trained on digits 0-4 only; the probes learn digits 5-9, classes it never saw.")
    out.tables.append(Table("Linear probes on frozen ViT features",
                            ["pooling", "train acc", "val acc", "best val acc", "val loss"],
                            [[n, *(m.get(k, pooling=n) for k in ("train_acc", "val_acc", "best_val_acc", "val_loss"))]
                             for n in vit.POOLINGS]))
    return out


def train_probe(cfg: PoolingConfig, ctx: RunContext, f_train: torch.Tensor, y_train: torch.Tensor,
                f_val: torch.Tensor, y_val: torch.Tensor, name: str) -> tuple[History, list[Metric]]:
    head = new_head(f_train.shape[1], int(y_train.max()) + 1, cfg.seed).to(ctx.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    rows = fit(Fit(head, optimizer, Batches((f_train, y_train), cfg.batch_size, shuffle=True, seed=cfg.seed),
                   Batches((f_val, y_val), 1024), cfg.epochs, ctx.device, ctx.run,
                   stage=name, checkpoint_path=ctx.checkpoint(f"probe_{name}"), progress=ctx.progress, say=ctx.say))
    return rows, stage_metrics(rows)


def discuss(results: RunResults) -> list[str]:
    m = results.metrics
    cls, mean = m.get("val_acc", pooling="cls"), m.get("val_acc", pooling="mean")
    if cls is None or mean is None:
        return []
    diff = cls - mean
    verdict = ("the two poolings are within 1 point: the information is spread over both the class token and the "
               "patch tokens" if abs(diff) < 0.01 else
               f"{'the CLS token' if diff > 0 else 'mean pooling'} is better by {abs(diff) * 100:.1f} points")
    return [f"Linear probe accuracy: CLS {cls:.3f}, mean of patches {mean:.3f}; {verdict}."]


def bench(cfg: PoolingConfig) -> Bench:
    """Cached features (one backbone pass) vs the backbone recomputed for each probe and epoch."""
    with bench_lib.scratch_context(cfg) as ctx:
        model = common.load_model(cfg, ctx)
        data = common.load_labelled(cfg, ctx, model, digit_classes=digits.TRANSFER_CLASSES)
        train = data.train.subset(cfg.train_limit, seed=cfg.seed)
        val = data.val.subset(cfg.val_limit, seed=cfg.seed + 1)
        frozen = FrozenFeatures(model.preprocess, model, vit.pooled_features).to(ctx.device)
        timings = {}
        started = time.perf_counter()
        accs = []
        for i, _name in enumerate(vit.POOLINGS):  # naive: every epoch runs the backbone again for each probe
            head = new_head(model.num_features, len(train.classes), cfg.seed).to(ctx.device)
            opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
            cols = slice(i * model.num_features, (i + 1) * model.num_features)
            batches = Batches((train.images, train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed)
            for epoch in range(1, cfg.epochs + 1):
                batches.set_epoch(epoch)  # the order fit() uses
                for xb, yb in batches:
                    loss = torch.nn.functional.cross_entropy(head(frozen(xb.to(ctx.device))[:, cols]),
                                                             yb.to(ctx.device))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():  # batch by batch: the split may be a memory map of any size
                preds = torch.cat([head(frozen(b.to(ctx.device))[:, cols]).argmax(1).cpu()
                                   for b in val.images.split(cfg.batch_size)])
                accs.append(float((preds == val.labels).float().mean()))
        timings["naive (backbone every epoch)"] = (time.perf_counter() - started, accs[0])
        started = time.perf_counter()
        kw = {"batch_size": max(cfg.batch_size, 128), "device": ctx.device}
        f_train, _ = extract(frozen, train.images, **kw)
        f_val, _ = extract(frozen, val.images, **kw)
        rows = {n: train_probe(cfg, ctx, f_train[:, i * model.num_features:(i + 1) * model.num_features], train.labels,
                               f_val[:, i * model.num_features:(i + 1) * model.num_features], val.labels, n)[1]
                for i, n in enumerate(vit.POOLINGS)}
        timings["atml (feature cache)"] = (time.perf_counter() - started, Metrics(rows["cls"]).value("val_acc"))
        throughput = vit_throughput(model, train.images, ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"vit.pooling {cfg.arch} ({cfg.backend}), {len(train)} train images, {cfg.epochs} "
                               f"epochs x 2 probes, device {ctx.device}, weights {cfg.weights}",
                               timings, throughput, chance=1 / len(train.classes))


def vit_throughput(model: vit.ViT, images: torch.Tensor, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Images/s of the ViT forward (fused vs unfused attention) and its share of the same-precision GEMM rate."""
    x = model.preprocess(images[:max(batch_size, 64)].to(device))
    flops = bench_lib.flops_of(lambda: model.tokens(x[:1]))

    @torch.inference_mode()
    def forward_all() -> None:
        for chunk in x.split(batch_size):
            with runtime.autocast(device):
                model.tokens(chunk)

    out: dict[str, Any] = {"images_per_s_fused_attention": bench_lib.images_per_s(forward_all, len(x), device)}
    with model.attention():  # the unfused path attention maps need
        out["images_per_s_unfused_attention"] = bench_lib.images_per_s(forward_all, len(x), device)
    return {**out, **bench_lib.ceiling(out["images_per_s_fused_attention"], flops, device)}


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    return (f"linear probe on CLS {fixed(m.value('val_acc', pooling='cls'))} vs mean of patch tokens "
            f"{fixed(m.value('val_acc', pooling='mean'))}")



_DEIT_CIFAR = {"preset": "full", "data": "cifar10", "arch": "deit_small_patch16_224", "weights": "imagenet"}

REFERENCES: tuple[Reference, ...] = (
    Reference("vit.pooling", "DeiT-Small, CIFAR-10 linear probe on the CLS token (seed report)", 0.95,
              "seed report (Assignment 0)", "checked", "val_acc", 0.05, _DEIT_CIFAR, {"pooling": "cls"}),
    Reference("vit.pooling", "DeiT-Small, CIFAR-10 linear probe on mean-pooled patch tokens (seed report)", 0.95,
              "seed report (Assignment 0)", "checked", "val_acc", 0.05, _DEIT_CIFAR, {"pooling": "mean"}),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(name="vit.pooling",
                        summary="Linear probes on the frozen ViT: CLS token vs mean of patch tokens",
                        config_cls=PoolingConfig, presets=PRESETS, run=run, discuss=discuss, bench=bench,
                        readme_row=readme_row,
                        references=REFERENCES)
