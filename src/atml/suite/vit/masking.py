"""``vit.masking``: accuracy, confidence and top-1 flips as patches are masked.

Random patches (several draws) and a centred disc of the same size, filled with the mean
pixel, black, or removed from the token sequence.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from matplotlib.lines import Line2D

from atml import figures
from atml.analysis.saliency import fill_masked
from atml.context import RunContext
from atml.models import vit
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite.vit import common
from atml.suite.vit.config import FILLS, MaskingConfig
from atml.suite.vit.config import MASKING_PRESETS as PRESETS

PATTERNS = ("random", "center")


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


def run(cfg: MaskingConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    data = common.load_labelled(cfg, ctx, model)
    probe_note = "" if model.has_head else common.fit_probe_head(model, data, ctx, cfg.batch_size, cfg.seed)
    split = data.val.subset(cfg.limit, seed=cfg.seed)
    own_labels = model.classes != split.classes
    base = unmasked(model, split.images, ctx.device, cfg.batch_size)
    labels = base.pred if own_labels else split.labels
    values = {"mean": base.mean_pixel, "zero": ((0 - model.preprocess.mean) / model.preprocess.std).cpu()}
    patches = model.grid ** 2
    results: dict[tuple[str, str, float], list[dict[str, float]]] = {}
    started = time.perf_counter()
    for pattern in PATTERNS:
        ctx.step(f"{pattern} masking of {len(split)} images: {len(cfg.ratios)} ratios x {len(cfg.fills)} fills"
                 + (f" x {cfg.seeds} draws" if pattern == "random" else ""))
        for ratio in cfg.ratios:
            draws = cfg.seeds if pattern == "random" and ratio > 0 else 1
            for seed in range(draws):
                gen = torch.Generator().manual_seed(cfg.seed * 1000 + seed)
                scores = {fill: Score() for fill in cfg.fills}
                masked = 0.0
                for start, images in _batches(split.images, cfg.batch_size):
                    rows = slice(start, start + len(images))
                    keep = (random_keep(len(images), patches, ratio, gen) if pattern == "random"
                            else center_keep(len(images), model.grid, ratio))
                    masked = 1 - keep.shape[1] / patches
                    x = model.preprocess(images.to(ctx.device)) if ratio > 0 else None
                    for fill, total in scores.items():
                        probs = (base.probs(rows) if x is None  # unmasked: the first pass's predictions
                                 else masked_probs(model, x, keep, fill, model.grid, values))
                        total.add(probs, labels[rows], base.pred[rows])
                for fill, total in scores.items():
                    results.setdefault((pattern, fill, ratio), []).append(total.means() | {"masked": masked})
    out = summarise_masking(results)
    out.add("images", len(split))
    out.add("masking_time_s", time.perf_counter() - started, "s")
    notes = out.notes
    notes += common.source_notes(cfg, ctx) + ([probe_note] if probe_note else [])
    notes.append(f"{len(split)} validation images of {data.name}; labels: "
                 + ("the model's own top-1 on the unmasked image (its classes are not the dataset's), so accuracy "
                    "here is agreement with the unmasked prediction." if own_labels else "the dataset's labels."))
    notes.append(f"Random masks: {cfg.seeds} draws per ratio (mean and standard deviation); centre: the patches "
                 "nearest the image centre, as many as random masking hides, so both mask the same share: "
                 "round(ratio x patches) / patches, the 'masked share' in the table and on the figure's x axis. "
                 "Fills: 'mean' = the mean pixel of "
                 "these images, 'zero' = black, 'drop' = the masked patch tokens are removed from the sequence. "
                 f"Evaluated {cfg.batch_size} images at a time: memory does not grow with the number of images.")
    out.add_figures(ctx.save_figure(masking_figure(results, cfg), "masking_curves"))
    out.add_figures(ctx.save_figure(examples_figure(split.images[0], model, cfg, values["mean"]), "masking_examples"))
    return out


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, len(images), batch_size):
        yield start, images[start:start + batch_size]


@dataclasses.dataclass
class Unmasked:
    """The first pass over the images: top-1 and label-class inputs kept per image, the mean pixel."""

    pred: torch.Tensor
    """``(N,)`` the unmasked top-1."""
    top_probs: torch.Tensor | None
    """``(N, classes)`` when N x classes is at most :data:`KEEP_PROBS`, else None (recomputed per batch)."""
    mean_pixel: torch.Tensor
    """``(1, C, 1, 1)`` the mean of the preprocessed images, per channel."""
    model: vit.ViT
    images: torch.Tensor
    device: torch.device

    def probs(self, rows: slice) -> torch.Tensor:
        if self.top_probs is not None:
            return self.top_probs[rows].float()
        x = self.model.preprocess(self.images[rows].to(self.device))
        result: torch.Tensor = self.model(x).float().softmax(-1).cpu()
        return result


KEEP_PROBS = 4_000_000
"""Unmasked probabilities kept from the first pass up to this many values (16 MB), else recomputed per batch."""


@torch.inference_mode()
def unmasked(model: vit.ViT, images: torch.Tensor, device: torch.device, batch_size: int) -> Unmasked:
    preds, kept, total, pixels = [], [], None, 0
    keep = len(images) * len(model.classes) <= KEEP_PROBS
    for _, batch in _batches(images, batch_size):
        x = model.preprocess(batch.to(device))
        sums = x.double().sum((0, 2, 3)).cpu()
        total = sums if total is None else total + sums
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
        probs = model(x).float().softmax(-1).cpu()
        preds.append(probs.argmax(1))
        if keep:
            kept.append(probs)
    assert total is not None
    mean = (total / pixels).float().view(1, -1, 1, 1)
    return Unmasked(torch.cat(preds), torch.cat(kept) if keep else None, mean, model, images, device)


@torch.inference_mode()
def masked_probs(model: vit.ViT, x: torch.Tensor, keep: torch.Tensor, fill: str, grid: int,
                 values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Softmax probabilities of one preprocessed batch with the patches outside ``keep`` masked by ``fill``."""
    logits: torch.Tensor = model(x, keep) if fill == "drop" else model(fill_masked(x, keep, grid, values[fill]))
    return logits.float().softmax(-1).cpu()


class Score:
    """Accuracy, confidence of the label class and top-1 flips, summed over batches."""

    def __init__(self) -> None:
        self.hits = self.conf = self.flips = 0.0
        self.count = 0

    def add(self, probs: torch.Tensor, labels: torch.Tensor, base_pred: torch.Tensor) -> None:
        pred = probs.argmax(1)
        self.hits += float((pred == labels).sum())
        self.conf += float(probs.gather(1, labels[:, None]).double().sum())
        self.flips += float((pred != base_pred).sum())
        self.count += len(labels)

    def means(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"acc": self.hits / n, "conf": self.conf / n, "flip": self.flips / n}


def summarise_masking(results: dict[tuple[str, str, float], list[dict[str, float]]]) -> Results:
    """Means over draws as records (condition: pattern, fill, nominal ratio in %), the share masked, a table."""
    out = Results()
    rows = []
    for (pattern, fill, ratio), draws in results.items():
        percent = round(ratio * 100)
        mean = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
        std = float(np.std([d["acc"] for d in draws], ddof=1)) if len(draws) > 1 else 0.0
        for name in ("acc", "conf", "flip"):
            out.add(name, mean[name], pattern=pattern, fill=fill, ratio=percent)
        if len(draws) > 1:
            out.add("acc_std", std, pattern=pattern, fill=fill, ratio=percent)
        if out.metrics.get("masked_share", pattern=pattern, ratio=percent) is None:
            out.add("masked_share", mean["masked"], pattern=pattern, ratio=percent)
        rows.append([pattern, fill, ratio, mean["masked"], mean["acc"], std, mean["conf"], mean["flip"]])
    out.tables.append(Table("Masking: accuracy, confidence of the label class, top-1 flips (mean over draws)",
                            ["pattern", "fill", "ratio", "masked share", "accuracy", "acc std", "confidence",
                             "flip rate"], rows))
    return out


@figures.styled
def masking_figure(results: dict[tuple[str, str, float], list[dict[str, float]]], cfg: MaskingConfig) -> Any:
    fig, axes = figures.figure(3, width=2.0, height=2.6)
    styles = {fill: figures.palette(i) for i, fill in enumerate(FILLS)}
    markers = {"mean": "o", "zero": "s", "drop": "^"}
    for col, (key, label) in enumerate((("acc", "accuracy"), ("conf", "confidence of label class"),
                                        ("flip", "top-1 flip rate"))):
        ax = axes[0][col]
        for pattern, ls in (("random", "-"), ("center", "--")):
            for fill in cfg.fills:
                draws = [results[(pattern, fill, r)] for r in cfg.ratios]
                x = [np.mean([d["masked"] for d in ds]) for ds in draws]
                y = [np.mean([d[key] for d in ds]) for ds in draws]
                err = [np.std([d[key] for d in ds], ddof=1) if len(ds) > 1 else 0 for ds in draws]
                ax.errorbar(x, y, yerr=err, ls=ls, marker=markers[fill], ms=3.5 if fill == "mean" else 3,
                            mfc="none" if fill == "drop" else styles[fill], color=styles[fill], capsize=2,
                            alpha=0.9)
        ax.set_xlabel("masked share of patches")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
    handles = [Line2D([], [], color=styles[fill], marker=markers[fill], mfc="none" if fill == "drop" else
                            styles[fill], label=f"fill: {fill}") for fill in cfg.fills]
    handles += [Line2D([], [], color="0.35", ls=ls, label=pattern) for pattern, ls in (("random", "-"),
                                                                                           ("center", "--"))]
    figures.legend_below(fig, handles, ncol=5)
    return fig


@figures.styled
def examples_figure(image: torch.Tensor, model: vit.ViT, cfg: MaskingConfig, value: torch.Tensor) -> Any:
    ratios = [r for r in cfg.ratios if r > 0] or list(cfg.ratios)
    fig, axes = figures.figure(len(ratios), 2, width=2.0, height=2.6)
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


def discuss(results: RunResults) -> list[str]:
    m = results.metrics
    out = []

    def share(pattern: str, ratio: float) -> str:
        return f"{m.get('masked_share', ratio / 100, pattern=pattern, ratio=ratio):.1%}"

    for pattern in PATTERNS:
        acc = m.by("acc", "ratio", pattern=pattern, fill="mean")
        if len(acc) >= 2:
            lo, hi = min(acc), max(acc)
            out.append(f"{pattern.capitalize()} masking with the mean pixel: accuracy {acc[lo]:.3f} with "
                       f"{share(pattern, lo)} of the patches masked -> {acc[hi]:.3f} with {share(pattern, hi)}.")
    dropped = m.by("acc", "ratio", pattern="random", fill="drop")
    hi = max(dropped, default=None)
    if hi and m.get("acc", pattern="random", fill="mean", ratio=hi) is not None:
        accs = {f: v for f in FILLS if (v := m.get("acc", pattern="random", fill=f, ratio=hi)) is not None}
        better = max(accs, key=lambda fill: accs[fill])
        out.append(f"With {share('random', hi)} of the patches masked at random the best fill is '{better}' "
                   f"({', '.join(f'{f} {v:.3f}' for f, v in accs.items())})"
                   + ("; dropping the tokens avoids feeding the model patches it never saw in training."
                      if better == "drop" else "."))
    return out


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    mean = m.by("acc", "ratio", pattern="random", fill="mean")
    drop = m.by("acc", "ratio", pattern="random", fill="drop")
    ratios = [r for r in sorted(mean) if r > 0]

    def share(r: float) -> str:
        return f"{m.get('masked_share', r / 100, pattern='random', ratio=r):.0%}"

    return (f"accuracy with {' / '.join(share(r) for r in ratios)} of patches masked at random, mean-pixel fill: "
            f"{' / '.join(fixed(mean[r]) for r in ratios)}; tokens dropped: "
            f"{' / '.join(fixed(drop[r]) for r in ratios if r in drop)}")



REFERENCES: tuple[Reference, ...] = (
    Reference("vit.masking", "ViTs keep about 60% ImageNet top-1 with 80% of the image randomly occluded", 0.60,
              "Naseer et al. 2021, Intriguing Properties of Vision Transformers (abstract)", "checked"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(name="vit.masking",
                        summary="ViT accuracy, confidence and flips vs masked patches (random, centre)",
                        config_cls=MaskingConfig, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
