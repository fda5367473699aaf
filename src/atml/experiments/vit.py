"""The ViT experiments: ``vit.classify``, ``vit.attention``, ``vit.masking``, ``vit.pooling``.

All four run on :class:`atml.models.vit.ViT` (timm or transformers), see
:mod:`atml.experiments.vit_common` for models, weights and data.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from atml import bench as bench_lib
from atml import runtime
from atml.analysis import attention as att
from atml.data import digits
from atml.errors import UsageError
from atml.experiments import vit_common as common
from atml.experiments.resnet_common import new_head, stage_metrics
from atml.models import vit
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.train.features import FrozenFeatures, extract
from atml.train.loop import Batches, Fit, fit

_SMOKE = {"arch": vit.DEIT_SMALL, "weights": "random"}
_SMOKE_SMALL = {"arch": "vit-digits", "weights": "random", "data": "digits"}
_DEMO = {"offline": True, "arch": "vit-digits", "weights": "train-digits", "data": "digits"}
_REHEARSAL = {"data": "rehearsal-cifar10", "weights": "random"}  # the full preset on generated data (timing)


# --- vit.classify -----------------------------------------------------------------------------


@dataclasses.dataclass
class ClassifyConfig(common.ViTConfig):
    images: tuple[str, ...] = ()
    """Image files or folders to classify (default: scikit-image's sample photos)."""
    top_k: int = 5
    count: int = 3
    """Held-out images shown when the model is not an ImageNet classifier (the demo's digits ViT)."""

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.top_k <= 10 or not 1 <= self.count <= 12:
            raise UsageError("top_k must be in [1, 10] and count in [1, 12]")


def run_classify(cfg: ClassifyConfig, ctx: RunContext) -> dict[str, Any]:
    model = common.load_model(cfg, ctx)
    metrics: dict[str, Any] = {}
    tables, figures, notes = [], [], common.source_notes(cfg, ctx)
    if len(model.classes) == 1000:
        groups = {"photos": (model, common.read_images(cfg.images) if cfg.images else common.sample_photos())}
    else:
        data = common.load_labelled(cfg, ctx)
        groups = {"held-out": (model, common.split_images(data.val, cfg.count))}
        probs = common.predict(model, data.val.images, ctx.device, cfg.batch_size)
        k = min(cfg.top_k, len(model.classes))
        metrics["val_top1"] = float((probs.argmax(1) == data.val.labels).float().mean())
        metrics[f"val_top{k}"] = float((probs.topk(k).indices == data.val.labels[:, None]).any(1).float().mean())
        notes.append(f"Held-out accuracy over all {len(data.val)} validation images of {data.name}: "
                     f"top-1 {metrics['val_top1']:.3f}.")
        photo_model, why = common.imagenet_photo_model(cfg, ctx)
        if photo_model is not None:
            groups["photos"] = (photo_model, common.read_images(cfg.images) if cfg.images else common.sample_photos())
        elif cfg.images:  # no ImageNet model: the user's images still get an answer, with what it means
            groups["your images"] = (model, common.read_images(cfg.images))
            notes.append(f"No ImageNet ViT weights are at hand ({why}), so your images were classified by this "
                         f"model, whose only classes are {', '.join(model.classes)}: each answer says which of "
                         "those the image resembles most, nothing more. Pass DeiT-Small weights (--weights, "
                         "--preset full) for ImageNet classes.")
        else:
            notes.append(f"The sample photos were skipped: no ImageNet ViT weights are available ({why}).")
    for group, (net, images) in groups.items():
        probs = torch.cat([common.predict(net, img[None], ctx.device, 1) for img in images.values()])
        k = min(cfg.top_k, len(net.classes))
        top = probs.topk(k)
        rows = []
        for i, name in enumerate(images):
            for rank in range(k):
                rows.append([name if rank == 0 else "", rank + 1, net.classes[int(top.indices[i, rank])],
                             float(top.values[i, rank])])
            metrics[f"{group}_top1_prob_{i}"] = float(top.values[i, 0])
        tables.append({"title": f"Top-{k} predictions ({group}; {net.arch.image_size}px, "
                                f"{'ImageNet-1k' if len(net.classes) == 1000 else 'digits 0-4'} classes)",
                       "columns": ["image", "rank", "class", "probability"], "rows": rows})
        figures += ctx.save_figure(predictions_figure(images, top, net.classes), f"predictions_{group}")
    if cfg.images:
        notes.append(f"Images: {', '.join(cfg.images)} (user files, {sum(len(g[1]) for n, g in groups.items() if n != 'held-out')} "
                     "read).")
    elif "photos" in groups:
        notes.append("Photos: scikit-image's sample images ("
                     + ", ".join(f"{k}: {v}" for k, v in common.PHOTOS.items()) + "), resized by the model's own "
                     "preprocessing (short side to 248 px, centre crop 224).")
    return {"metrics": metrics, "figures": figures, "tables": tables, "notes": notes}


@plots.styled
def predictions_figure(images: dict[str, torch.Tensor], top: Any, classes: list[str]) -> Any:
    n = len(images)
    fig, axes = plots.figure(2, n, width=2.0, height=1.5 * n)
    for i, (name, img) in enumerate(images.items()):
        axes[i][0].imshow(_display(img))
        axes[i][0].set_title(name if len(name) <= 40 else "..." + name[-37:])
        axes[i][0].axis("off")
        labels = [classes[int(j)][:28] for j in top.indices[i]]
        ax = axes[i][1]
        ax.barh(range(len(labels))[::-1], top.values[i].numpy(), color="tab:blue")
        ax.set_yticks(range(len(labels))[::-1], labels=labels)
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
    fig.tight_layout()
    return fig


def _display(img: torch.Tensor) -> np.ndarray:
    arr = img.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def discuss_classify(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    out = []
    if "val_top1" in m:
        out.append(f"On the held-out images the model's top-1 accuracy is {m['val_top1']:.3f}.")
    probs = [v for k, v in m.items() if "_top1_prob_" in k]
    if probs:
        out.append(f"The top-1 probability of the shown images ranges from {min(probs):.2f} to {max(probs):.2f}"
                   + ("; the model is confident on all of them." if min(probs) > 0.5 else
                      "; low values mean the model hesitates between classes."))
    return out


# --- vit.attention ----------------------------------------------------------------------------


@dataclasses.dataclass
class AttentionConfig(common.ViTConfig):
    images: tuple[str, ...] = ()
    """Image files or folders (default: the sample photos, or held-out digits for the demo ViT)."""
    count: int = 3
    """Images drawn with their maps."""
    stats_images: int = 64
    """Held-out images the head statistics average over (ImageNet models: the photos)."""

    def validate(self) -> None:
        super().validate()
        require = self.count >= 1 and self.stats_images >= 1
        if not require:
            raise UsageError("count and stats_images must be >= 1")


def run_attention(cfg: AttentionConfig, ctx: RunContext) -> dict[str, Any]:
    model = common.load_model(cfg, ctx)
    notes = common.source_notes(cfg, ctx)
    if cfg.images:
        shown = common.read_images(cfg.images)
        stats_x = common.as_batch(shown, model, ctx.device)
    elif len(model.classes) == 1000:
        shown = common.sample_photos()
        stats_x = common.as_batch(shown, model, ctx.device)
    else:
        data = common.load_labelled(cfg, ctx)
        shown = common.split_images(data.val, cfg.count)
        stats_x = model.preprocess(data.val.subset(cfg.stats_images, seed=cfg.seed).images.to(ctx.device))
    shown = dict(list(shown.items())[:cfg.count]) if not cfg.images else shown
    shown_x = common.as_batch(shown, model, ctx.device)
    maps = layer_maps(model, shown_x, cfg.batch_size)
    stats = head_stats(model, layer_maps(model, stats_x, cfg.batch_size))
    last = att.cls_to_patches(maps[-1])  # (B, H, N)
    flow = att.rollout(maps)
    figures = ctx.save_figure(overlay_figure(shown, model, last.mean(1), flow), "attention_maps")
    figures += ctx.save_figure(heads_figure(next(iter(shown.values())), model, last[0]), "attention_heads")
    figures += ctx.save_figure(stats_figure(stats), "head_statistics")
    metrics = {"images": len(shown), "stats_images": int(stats_x.shape[0]), "layers": len(maps),
               "heads": int(maps[-1].shape[1]), "grid": model.grid,
               "max_entropy_nats": math.log(model.grid ** 2)}
    for name in ("entropy", "distance_px", "similarity"):
        metrics[f"last_layer_mean_{name}"] = float(stats[name][-1].mean())
        metrics[f"first_layer_mean_{name}"] = float(stats[name][0].mean())
    metrics["last_layer_cls_self_attention"] = float(maps[-1][:, :, 0, 0].mean())
    rows = []
    for h in range(stats["entropy"].shape[1]):
        peak = int(stats["peak"][-1][h])
        rows.append([h, float(stats["entropy"][-1][h]), float(stats["distance_px"][-1][h]),
                     f"({peak // model.grid}, {peak % model.grid})", float(stats["peak_share"][-1][h])])
    tables = [{"title": f"Last-layer heads (CLS-to-patch attention, {int(stats_x.shape[0])} images; "
                        f"uniform entropy = {math.log(model.grid ** 2):.2f} nats)",
               "columns": ["head", "entropy (nats)", "mean distance (px)", "peak patch (row, col)",
                           "images peaking there"], "rows": rows},
              {"title": "Per layer: mean over heads",
               "columns": ["layer", "entropy (nats)", "mean distance (px)", "head-head cosine"],
               "rows": [[i + 1, float(stats["entropy"][i].mean()), float(stats["distance_px"][i].mean()),
                         float(stats["similarity"][i])] for i in range(len(maps))]}]
    notes.append("Attention probabilities recorded from the model's unfused attention path (hooks removed "
                 "afterwards); maps are the last layer's CLS row over the patches, renormalised, and the rollout "
                 "of Abnar and Zuidema (2020) through all layers, overlaid in red.")
    return {"metrics": metrics, "figures": figures, "tables": tables, "notes": notes}


@torch.inference_mode()
def layer_maps(model: vit.ViT, x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Each layer's attention ``(B, H, T, T)`` on the CPU, for normalised images ``x``."""
    per_batch = []
    for chunk in x.split(batch_size):
        with model.attention() as maps:
            model(chunk)
        per_batch.append([m.float().cpu() for m in maps])
    return [torch.cat(layer) for layer in zip(*per_batch)]


def head_stats(model: vit.ViT, maps: list[torch.Tensor]) -> dict[str, Any]:
    """Per layer and head: entropy, mean distance, peak patch; per layer: head-head similarity."""
    out: dict[str, list] = {"entropy": [], "distance_px": [], "similarity": [], "peak": [], "peak_share": []}
    for attn in maps:
        cls = att.cls_to_patches(attn)  # (B, H, N)
        out["entropy"].append(att.entropy(cls).mean(0))
        out["distance_px"].append(att.mean_distance(attn, model.grid, model.arch.patch_size))
        out["similarity"].append(float(att.head_similarity(cls).mean()))
        peaks = cls.argmax(-1)  # (B, H)
        mode = peaks.mode(0).values
        out["peak"].append(mode)
        out["peak_share"].append((peaks == mode).float().mean(0))
    return {k: (torch.stack(v) if k != "similarity" else torch.tensor(v)) for k, v in out.items()}


def _upsample(grid_map: torch.Tensor, grid: int, size: tuple[int, int]) -> np.ndarray:
    m = grid_map.reshape(1, 1, grid, grid).float()
    m = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]
    return ((m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)).numpy()


def _overlay(ax: Any, img: torch.Tensor, heat: np.ndarray) -> None:
    """The image in grey with the attention in red, its opacity following the attention."""
    arr = img.float().mean(0).numpy() / 255
    ax.imshow(arr, cmap="gray", vmin=0, vmax=1)
    red = np.zeros((*heat.shape, 4))
    red[..., 0] = 1.0
    red[..., 3] = 0.75 * heat
    ax.imshow(red)
    ax.axis("off")


def _crop(img: torch.Tensor, model: vit.ViT) -> torch.Tensor:
    """The image as the model saw it (resize + centre crop), uint8, for drawing."""
    x = model.preprocess(img[None].to(model.preprocess.mean.device)) * model.preprocess.std + model.preprocess.mean
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@plots.styled
def overlay_figure(images: dict[str, torch.Tensor], model: vit.ViT, last: torch.Tensor, flow: torch.Tensor) -> Any:
    n = len(images)
    fig, axes = plots.figure(3, n, width=2.0, height=2.0 * n)
    for i, (name, img) in enumerate(images.items()):
        shown = _crop(img, model)
        size = tuple(shown.shape[-2:])
        axes[i][0].imshow(shown.permute(1, 2, 0).numpy())
        axes[i][0].set_title(name[:30])
        axes[i][0].axis("off")
        _overlay(axes[i][1], shown, _upsample(last[i], model.grid, size))
        axes[i][1].set_title("last layer, mean of heads")
        _overlay(axes[i][2], shown, _upsample(flow[i], model.grid, size))
        axes[i][2].set_title("rollout, all layers")
    fig.tight_layout()
    return fig


@plots.styled
def heads_figure(img: torch.Tensor, model: vit.ViT, per_head: torch.Tensor) -> Any:
    heads = per_head.shape[0]
    cols = min(heads, 6)
    rows = math.ceil(heads / cols)
    fig, axes = plots.figure(cols, rows, width=2.0, height=1.3 * rows + 0.3)
    shown = _crop(img, model)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h < heads:
            _overlay(ax, shown, _upsample(per_head[h], model.grid, tuple(shown.shape[-2:])))
            ax.set_title(f"head {h}, H={float(att.entropy(per_head[h])):.2f}")
        else:
            ax.axis("off")
    fig.suptitle("last layer, CLS attention per head (H: entropy in nats)")
    fig.tight_layout()
    return fig


@plots.styled
def stats_figure(stats: dict[str, Any]) -> Any:
    fig, axes = plots.figure(3, width=2.0, height=2.2)
    for ax, key, title in ((axes[0][0], "entropy", "CLS entropy (nats)"),
                           (axes[0][1], "distance_px", "mean attention distance (px)")):
        image = ax.imshow(stats[key].numpy(), aspect="auto", cmap="viridis")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(title)
        ax.grid(False)
        fig.colorbar(image, ax=ax, fraction=0.05)
    ax = axes[0][2]
    ax.plot(range(1, len(stats["similarity"]) + 1), stats["similarity"].numpy(), "o-")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean head-head cosine")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def discuss_attention(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    if "last_layer_mean_entropy" not in m:
        return []
    out = [f"Last-layer CLS attention has a mean entropy of {m['last_layer_mean_entropy']:.2f} nats against "
           f"{m['max_entropy_nats']:.2f} for a uniform map over {m['grid']}x{m['grid']} patches "
           f"(first layer: {m['first_layer_mean_entropy']:.2f})"
           + ("; the last layer is more focused than the first." if m["last_layer_mean_entropy"] <
              m["first_layer_mean_entropy"] else "; the last layer is not more focused than the first.")]
    out.append(f"Mean attention distance grows from {m['first_layer_mean_distance_px']:.1f} px in the first layer "
               f"to {m['last_layer_mean_distance_px']:.1f} px in the last"
               if m["last_layer_mean_distance_px"] > m["first_layer_mean_distance_px"] else
               f"Mean attention distance is {m['first_layer_mean_distance_px']:.1f} px in the first layer and "
               f"{m['last_layer_mean_distance_px']:.1f} px in the last")
    out[-1] += (f"; heads agree with each other at cosine {m['last_layer_mean_similarity']:.2f} in the last layer "
                f"({m['first_layer_mean_similarity']:.2f} in the first).")
    return out


# --- vit.masking ------------------------------------------------------------------------------

FILLS = ("mean", "zero", "drop")
PATTERNS = ("random", "center")


@dataclasses.dataclass
class MaskingConfig(common.ViTConfig):
    ratios: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75)
    seeds: int = 3
    """Random masks drawn per ratio (mean and spread reported)."""
    limit: int = 500
    """Validation images evaluated (0: all)."""
    fills: tuple[str, ...] = FILLS

    def validate(self) -> None:
        super().validate()
        if not self.ratios or any(not 0 <= r < 1 for r in self.ratios):
            raise UsageError(f"ratios={list(self.ratios)} is not valid; use fractions in [0, 1)")
        bad = [f for f in self.fills if f not in FILLS]
        if bad or not self.fills:
            raise UsageError(f"fills={list(self.fills)} is not valid; choose from {', '.join(FILLS)}")
        require_seeds = self.seeds >= 1 and self.limit >= 0
        if not require_seeds:
            raise UsageError("seeds must be >= 1 and limit >= 0")


def random_keep(batch: int, patches: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Indices ``(B, K)`` (sorted) of the patches kept when ``ratio`` of them are masked at random."""
    keep = patches - round(ratio * patches)
    return torch.rand(batch, patches, generator=generator).argsort(1)[:, :keep].sort(1).values


def center_keep(batch: int, grid: int, ratio: float) -> torch.Tensor:
    """Indices ``(B, K)`` of the patches kept when the ``round(ratio * N)`` patches nearest the centre are masked.

    A centred disc of whole patches with exactly as many patches as random masking hides at
    the same ratio (a square of side ``round(sqrt(ratio * N))`` masked 14% for a nominal 10% on
    an 8x8 grid), so both patterns are compared at the same masked share.
    """
    patches = grid * grid
    masked = round(ratio * patches)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    centre = (grid - 1) / 2
    distance = ((rows - centre) ** 2 + (cols - centre) ** 2).flatten()  # (N,), from the grid's centre
    order = torch.argsort(distance, stable=True)  # nearest first; ties in index order
    keep = order[masked:].sort().values
    return keep.expand(batch, -1)


def fill_masked(x: torch.Tensor, keep: torch.Tensor, grid: int, value: torch.Tensor) -> torch.Tensor:
    """Normalised images with every patch not in ``keep`` set to ``value`` ``(1, C, 1, 1)``."""
    b, _, size, _ = x.shape
    kept = torch.zeros(b, grid * grid, dtype=torch.bool, device=x.device)
    kept.scatter_(1, keep.to(x.device), True)
    patch = size // grid
    pixel = kept.view(b, 1, grid, grid).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return torch.where(pixel, x, value.to(x.device))


def run_masking(cfg: MaskingConfig, ctx: RunContext) -> dict[str, Any]:
    model = common.load_model(cfg, ctx)
    data = common.load_labelled(cfg, ctx)
    split = data.val.subset(cfg.limit, seed=cfg.seed)
    x = torch.cat([model.preprocess(b.to(ctx.device)) for b in split.images.split(cfg.batch_size)])
    base = evaluate(model, x, None, cfg.batch_size)
    own_labels = model.classes != split.classes
    labels = base.argmax(1) if own_labels else split.labels
    values = {"mean": x.mean((0, 2, 3), keepdim=True),
              "zero": ((0 - model.preprocess.mean) / model.preprocess.std).cpu()}
    patches = model.grid ** 2
    results: dict[tuple[str, str, float], list[dict[str, float]]] = {}
    started = time.perf_counter()
    for pattern in PATTERNS:
        ctx.step(f"{pattern} masking of {len(x)} images: {len(cfg.ratios)} ratios x {len(cfg.fills)} fills"
                 + (f" x {cfg.seeds} draws" if pattern == "random" else ""))
        for ratio in cfg.ratios:
            draws = cfg.seeds if pattern == "random" and ratio > 0 else 1
            for seed in range(draws):
                gen = torch.Generator().manual_seed(cfg.seed * 1000 + seed)
                keep = (random_keep(len(x), patches, ratio, gen) if pattern == "random"
                        else center_keep(len(x), model.grid, ratio))
                for fill in cfg.fills:
                    if ratio == 0:
                        probs = base
                    elif fill == "drop":
                        probs = evaluate(model, x, keep, cfg.batch_size)
                    else:
                        probs = evaluate(model, fill_masked(x, keep, model.grid, values[fill]), None, cfg.batch_size)
                    results.setdefault((pattern, fill, ratio), []).append(
                        score(probs, labels, base.argmax(1)) | {"masked": 1 - keep.shape[1] / patches})
    metrics, rows = summarise_masking(results)
    metrics["images"] = len(split)
    metrics["masking_time_s"] = time.perf_counter() - started
    notes = common.source_notes(cfg, ctx)
    notes.append(f"{len(split)} validation images of {data.name}; labels: "
                 + ("the model's own top-1 on the unmasked image (its classes are not the dataset's), so accuracy "
                    "here is agreement with the unmasked prediction." if own_labels else "the dataset's labels."))
    notes.append(f"Random masks: {cfg.seeds} draws per ratio (mean and standard deviation); centre: the patches "
                 "nearest the image centre, as many as random masking hides, so both mask the same share: "
                 "round(ratio x patches) / patches, the 'masked share' in the table and on the figure's x axis. Fills: 'mean' = the mean pixel of "
                 "these images, 'zero' = black, 'drop' = the masked patch tokens are removed from the sequence.")
    figures = ctx.save_figure(masking_figure(results, cfg), "masking_curves")
    figures += ctx.save_figure(examples_figure(split.images[0], model, cfg, values["mean"]), "masking_examples")
    table = {"title": "Masking: accuracy, confidence of the label class, top-1 flips (mean over draws)",
             "columns": ["pattern", "fill", "ratio", "masked share", "accuracy", "acc std", "confidence",
                         "flip rate"], "rows": rows}
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": notes}


@torch.inference_mode()
def evaluate(model: vit.ViT, x: torch.Tensor, keep: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, len(x), batch_size):
        k = keep[start:start + batch_size] if keep is not None else None
        out.append(model(x[start:start + batch_size], k).float().softmax(-1).cpu())
    return torch.cat(out)


def score(probs: torch.Tensor, labels: torch.Tensor, base_pred: torch.Tensor) -> dict[str, float]:
    pred = probs.argmax(1)
    return {"acc": float((pred == labels).float().mean()),
            "conf": float(probs.gather(1, labels[:, None]).mean()),
            "flip": float((pred != base_pred).float().mean())}


def summarise_masking(results: dict[tuple[str, str, float], list[dict[str, float]]]) -> tuple[dict[str, float], list]:
    metrics: dict[str, float] = {}
    rows = []
    for (pattern, fill, ratio), draws in results.items():
        tag = f"{pattern}_{fill}_{round(ratio * 100)}"
        mean = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
        std = float(np.std([d["acc"] for d in draws], ddof=1)) if len(draws) > 1 else 0.0
        metrics |= {f"acc_{tag}": mean["acc"], f"conf_{tag}": mean["conf"], f"flip_{tag}": mean["flip"],
                    f"masked_share_{pattern}_{round(ratio * 100)}": mean["masked"]}
        if len(draws) > 1:
            metrics[f"acc_std_{tag}"] = std
        rows.append([pattern, fill, ratio, mean["masked"], mean["acc"], std, mean["conf"], mean["flip"]])
    return metrics, rows


@plots.styled
def masking_figure(results: dict[tuple[str, str, float], list[dict[str, float]]], cfg: MaskingConfig) -> Any:
    fig, axes = plots.figure(3, width=2.0, height=2.6)
    styles = {fill: plots.palette(i) for i, fill in enumerate(FILLS)}
    for col, (key, label) in enumerate((("acc", "accuracy"), ("conf", "confidence of label class"),
                                        ("flip", "top-1 flip rate"))):
        ax = axes[0][col]
        for pattern, ls in (("random", "-"), ("center", "--")):
            for fill in cfg.fills:
                draws = [results[(pattern, fill, r)] for r in cfg.ratios]
                x = [np.mean([d["masked"] for d in ds]) for ds in draws]
                y = [np.mean([d[key] for d in ds]) for ds in draws]
                err = [np.std([d[key] for d in ds], ddof=1) if len(ds) > 1 else 0 for ds in draws]
                ax.errorbar(x, y, yerr=err, ls=ls, marker="o", ms=3, color=styles[fill], capsize=2)
        ax.set_xlabel("masked share of patches")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
    handles = [plots.Line2D([], [], color=styles[fill], marker="o", label=f"fill: {fill}") for fill in cfg.fills]
    handles += [plots.Line2D([], [], color="0.35", ls=ls, label=pattern) for pattern, ls in (("random", "-"),
                                                                                           ("center", "--"))]
    plots.legend_below(fig, handles, ncol=5)
    return fig


@plots.styled
def examples_figure(image: torch.Tensor, model: vit.ViT, cfg: MaskingConfig, value: torch.Tensor) -> Any:
    ratios = [r for r in cfg.ratios if r > 0] or list(cfg.ratios)
    fig, axes = plots.figure(len(ratios), 2, width=2.0, height=2.6)
    x = model.preprocess(image[None].to(model.preprocess.mean.device)).cpu()
    mean, std = model.preprocess.mean.cpu(), model.preprocess.std.cpu()
    gen = torch.Generator().manual_seed(cfg.seed)
    for col, ratio in enumerate(ratios):
        for row, keep in enumerate((random_keep(1, model.grid ** 2, ratio, gen), center_keep(1, model.grid, ratio))):
            shown = (fill_masked(x, keep, model.grid, value.cpu()) * std + mean)[0].clamp(0, 1)
            ax = axes[row][col]
            ax.imshow(shown.permute(1, 2, 0).numpy())
            ax.set_title(f"{'random' if row == 0 else 'centre'} {ratio:.0%}")
            ax.axis("off")
    fig.tight_layout()
    return fig


def discuss_masking(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    out = []
    share = lambda pattern, tag: f"{m.get(f'masked_share_{pattern}_{tag}', tag / 100):.1%}"  # noqa: E731
    for pattern in PATTERNS:
        tags = sorted((int(k.rsplit("_", 1)[1]), k) for k in m if k.startswith(f"acc_{pattern}_mean_"))
        if len(tags) >= 2:
            (lo, k_lo), (hi, k_hi) = tags[0], tags[-1]
            out.append(f"{pattern.capitalize()} masking with the mean pixel: accuracy {m[k_lo]:.3f} with "
                       f"{share(pattern, lo)} of the patches masked -> {m[k_hi]:.3f} with {share(pattern, hi)}.")
    hi = max((int(k.rsplit("_", 1)[1]) for k in m if k.startswith("acc_random_drop_")), default=None)
    if hi and f"acc_random_mean_{hi}" in m:
        better = max(("mean", "zero", "drop"), key=lambda f: m.get(f"acc_random_{f}_{hi}", -1))
        out.append(f"With {share('random', hi)} of the patches masked at random the best fill is '{better}' "
                   f"({', '.join(f'{f} {m[k]:.3f}' for f in FILLS if (k := f'acc_random_{f}_{hi}') in m)})"
                   + ("; dropping the tokens avoids feeding the model patches it never saw in training."
                      if better == "drop" else "."))
    return out


# --- vit.pooling ------------------------------------------------------------------------------


@dataclasses.dataclass
class PoolingConfig(common.ViTConfig):
    epochs: int = 10
    lr: float = 1e-3
    train_limit: int = 0
    val_limit: int = 0

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1 or not self.lr > 0 or self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("epochs must be >= 1, lr > 0, train_limit and val_limit >= 0")


POOLINGS = {"cls": lambda t: t[:, 0], "mean": lambda t: t[:, 1:].mean(1)}


def run_pooling(cfg: PoolingConfig, ctx: RunContext) -> dict[str, Any]:
    model = common.load_model(cfg, ctx)
    data = common.load_labelled(cfg, ctx, digit_classes=digits.TRANSFER_CLASSES)
    train = data.train.subset(cfg.train_limit, seed=cfg.seed)
    val = data.val.subset(cfg.val_limit, seed=cfg.seed + 1)
    frozen = FrozenFeatures(model.preprocess, model, pooled_features, cfg.compile).to(ctx.device)
    started = time.perf_counter()
    kw = {"batch_size": max(cfg.batch_size, 128), "device": ctx.device, "progress": ctx.progress}
    f_train, ips = extract(frozen, train.images, desc="features train", **kw)
    f_val, _ = extract(frozen, val.images, desc="features val", **kw)
    metrics: dict[str, Any] = {"feature_time_s": time.perf_counter() - started, "backbone_images_per_s": ips}
    dim = model.num_features
    stages = {}
    for i, name in enumerate(POOLINGS):
        cols = slice(i * dim, (i + 1) * dim)
        stages[name], m = train_probe(cfg, ctx, f_train[:, cols], train.labels, f_val[:, cols], val.labels, name)
        metrics |= m
    metrics["cls_minus_mean_val_acc"] = metrics["val_acc_cls"] - metrics["val_acc_mean"]
    figures = ctx.save_figure(plots.training_curves(stages, title="linear probes: CLS token vs mean of patches"),
                              "probe_curves")
    notes = common.source_notes(cfg, ctx)
    notes.append(f"Both probes: one linear layer on frozen, cached features ({train.images.shape[-1]}px "
                 f"{data.name}, {len(train)} train / {len(val)} val images), same initialisation seed, Adam lr {cfg.lr}, "
                 f"{cfg.epochs} epochs, batch {cfg.batch_size}. CLS = the final class token after the last norm; "
                 "mean = the average of the final patch tokens.")
    if cfg.weights == "train-digits":
        notes.append("Demo: the ViT was trained on digits 0-4 only; the probes learn digits 5-9, classes it never saw.")
    table = {"title": "Linear probes on frozen ViT features",
             "columns": ["pooling", "train acc", "val acc", "best val acc", "val loss"],
             "rows": [[n, metrics[f"train_acc_{n}"], metrics[f"val_acc_{n}"], metrics[f"best_val_acc_{n}"],
                       metrics[f"val_loss_{n}"]] for n in POOLINGS]}
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": notes}


def pooled_features(model: vit.ViT, x: torch.Tensor) -> torch.Tensor:
    """``[CLS, mean of patches]`` side by side, ``(B, 2 * D)``, from one forward pass."""
    tokens = model.tokens(x)
    return torch.cat([fn(tokens) for fn in POOLINGS.values()], dim=1)


def train_probe(cfg: PoolingConfig, ctx: RunContext, f_train: torch.Tensor, y_train: torch.Tensor,
                f_val: torch.Tensor, y_val: torch.Tensor, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    head = new_head(f_train.shape[1], int(y_train.max()) + 1, cfg.seed).to(ctx.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    rows = fit(Fit(head, optimizer, Batches((f_train, y_train), cfg.batch_size, shuffle=True, seed=cfg.seed),
                   Batches((f_val, y_val), 1024), cfg.epochs, ctx.device, ctx.run,
                   stage=name, checkpoint_path=ctx.checkpoint(f"probe_{name}"), progress=ctx.progress, say=ctx.say))
    return rows, {k.replace("_0", f"_{name}"): v for k, v in stage_metrics(rows, 0).items()}


def discuss_pooling(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    if "val_acc_cls" not in m:
        return []
    diff = m["cls_minus_mean_val_acc"]
    verdict = ("the two poolings are within 1 point: the information is spread over both the class token and the "
               "patch tokens" if abs(diff) < 0.01 else
               f"{'the CLS token' if diff > 0 else 'mean pooling'} is better by {abs(diff) * 100:.1f} points")
    return [f"Linear probe accuracy: CLS {m['val_acc_cls']:.3f}, mean of patches {m['val_acc_mean']:.3f}; {verdict}."]


def bench_pooling(cfg: PoolingConfig) -> dict[str, Any]:
    """Cached features (one backbone pass) vs the backbone recomputed for each probe and epoch."""
    cfg = dataclasses.replace(cfg, weights="random" if cfg.weights == "train-digits" else cfg.weights)
    with bench_lib.scratch_context(cfg) as ctx:
        model = common.load_model(cfg, ctx)
        data = common.load_labelled(cfg, ctx, digit_classes=digits.TRANSFER_CLASSES)
        train = data.train.subset(cfg.train_limit, seed=cfg.seed)
        val = data.val.subset(cfg.val_limit, seed=cfg.seed + 1)
        frozen = FrozenFeatures(model.preprocess, model, pooled_features).to(ctx.device)
        timings = {}
        started = time.perf_counter()
        accs = []
        for i, name in enumerate(POOLINGS):  # naive: every epoch runs the backbone again for each probe
            head = new_head(model.num_features, len(train.classes), cfg.seed).to(ctx.device)
            opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
            cols = slice(i * model.num_features, (i + 1) * model.num_features)
            batches = Batches((train.images, train.labels), cfg.batch_size, shuffle=True, seed=cfg.seed)
            for epoch in range(1, cfg.epochs + 1):
                batches.set_epoch(epoch)  # the order fit() uses
                for xb, yb in batches:
                    loss = torch.nn.functional.cross_entropy(head(frozen(xb.to(ctx.device))[:, cols]), yb.to(ctx.device))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                accs.append(float((head(frozen(val.images.to(ctx.device))[:, cols]).argmax(1).cpu() == val.labels)
                                  .float().mean()))
        timings["naive (backbone every epoch)"] = (time.perf_counter() - started, accs[0])
        started = time.perf_counter()
        kw = {"batch_size": max(cfg.batch_size, 128), "device": ctx.device}
        f_train, _ = extract(frozen, train.images, **kw)
        f_val, _ = extract(frozen, val.images, **kw)
        rows = {n: train_probe(cfg, ctx, f_train[:, i * model.num_features:(i + 1) * model.num_features], train.labels,
                               f_val[:, i * model.num_features:(i + 1) * model.num_features], val.labels, n)[1]
                for i, n in enumerate(POOLINGS)}
        timings["atml (feature cache)"] = (time.perf_counter() - started, rows["cls"]["val_acc_cls"])
        throughput = vit_throughput(model, train.images, ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"vit.pooling {cfg.arch} ({cfg.backend}), {len(train)} train images, {cfg.epochs} "
                               f"epochs x 2 probes, device {ctx.device}, weights {cfg.weights} (speed only)",
                               timings, throughput)


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


EXPERIMENTS = (
    Experiment(name="vit.classify", summary="ViT top-1/top-5 predictions with probabilities for a few images",
               config_cls=ClassifyConfig, run=run_classify, discuss=discuss_classify,
               presets={"smoke": {**_SMOKE, "data": "digits"}, "demo": _DEMO, "full": {}, "rehearsal": _REHEARSAL}),
    Experiment(name="vit.attention", summary="CLS attention maps, attention rollout and head specialisation",
               config_cls=AttentionConfig, run=run_attention, discuss=discuss_attention,
               presets={"smoke": {**_SMOKE, "data": "digits"}, "demo": {**_DEMO, "stats_images": 128}, "full": {},
                        "rehearsal": _REHEARSAL}),
    Experiment(name="vit.masking", summary="ViT accuracy, confidence and flips vs masked patches (random, centre)",
               config_cls=MaskingConfig, run=run_masking, discuss=discuss_masking,
               presets={"smoke": {**_SMOKE_SMALL, "ratios": (0.0, 0.5), "seeds": 2, "limit": 40},
                        "demo": {**_DEMO, "limit": 0}, "full": {"limit": 500},
                        "rehearsal": {**_REHEARSAL, "limit": 500}}),
    Experiment(name="vit.pooling", summary="Linear probes on the frozen ViT: CLS token vs mean of patch tokens",
               config_cls=PoolingConfig, run=run_pooling, bench=bench_pooling, discuss=discuss_pooling,
               presets={"smoke": {**_SMOKE_SMALL, "data": "generated-cifar10", "epochs": 2, "batch_size": 32},
                        "demo": {**_DEMO, "epochs": 60, "batch_size": 64, "lr": 1e-2},
                        "full": {"epochs": 10, "batch_size": 128},
                        "rehearsal": {**_REHEARSAL, "epochs": 10, "batch_size": 128}}),
)
