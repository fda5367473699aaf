"""``vit.classify``: top-1/top-5 predictions with probabilities for a few images.

scikit-image's sample photos (or your files and folders) through the model's own
preprocessing; at the demo preset, held-out digits through the demo ViT (and your images,
with a note on what its digit classes mean).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from atml import figures
from atml.context import RunContext
from atml.data import factory
from atml.errors import UsageError
from atml.models import vit
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite.vit import common
from atml.suite.vit.config import CLASSIFY_PRESETS as PRESETS
from atml.suite.vit.config import ClassifyConfig

Groups = dict[str, tuple[vit.ViT, dict[str, torch.Tensor]]]
"""The images to classify by group (``folder``, ``photos``, ``your images``, ``held-out``), each with its model."""


def run(cfg: ClassifyConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    if not model.has_head:
        raise UsageError(f"{cfg.arch} has no classification head (a self-supervised backbone), so it has no classes "
                         "to predict; vit.attention, vit.masking (with a fitted probe) and vit.pooling take it")
    out = Results(notes=common.source_notes(cfg, ctx))
    data = factory.describe(cfg.data)
    if len(model.classes) == 1000 and data.files and not data.imagenet_labels:  # a folder, in the model's classes
        groups = _folder_groups(cfg, ctx, model, out.notes)
    elif len(model.classes) == 1000 and not data.imagenet_labels:
        groups = {"photos": (model, _photos(cfg, model, out.notes))}
    else:
        groups = _scored_groups(cfg, ctx, model, out)
    for group, (net, images) in groups.items():
        _classify(group, net, images, cfg, ctx, out)
    if cfg.images:
        out.notes.append(f"Images: {', '.join(cfg.images)} (user files, "
                         f"{sum(len(g[1]) for n, g in groups.items() if n != 'held-out')} read).")
    elif "photos" in groups:
        out.notes.append("Photos: scikit-image's sample images ("
                         + ", ".join(f"{k}: {v}" for k, v in common.PHOTOS.items()) + "), then the model's own "
                         "centre crop.")
    return out


def _photos(cfg: ClassifyConfig, model: vit.ViT, notes: list[str]) -> dict[str, torch.Tensor]:
    """The user's images, or scikit-image's sample photos, decoded for ``model``."""
    return common.user_images(cfg, model, notes) if cfg.images else common.sample_photos(cfg, model, notes)


def _folder_groups(cfg: ClassifyConfig, ctx: RunContext, model: vit.ViT, notes: list[str]) -> Groups:
    """An ImageNet model on a folder of other classes: some of its images (and the user's), no accuracy."""
    data = common.load_labelled(cfg, ctx, model)
    groups: Groups = {"folder": (model, common.split_images(data.val, cfg.count))}
    notes.append(f"{data.name}: {len(groups['folder'][1])} of its {len(data.val):,} validation images classified "
                 f"into ImageNet-1k's classes. The folder's classes ({', '.join(data.val.classes[:8])}"
                 f"{', ...' if len(data.val.classes) > 8 else ''}) are not the model's, so no accuracy is "
                 "computed; data=imagenet scores a model on its own classes.")
    if cfg.images:
        groups["your images"] = (model, common.user_images(cfg, model, notes))
    return groups


def _scored_groups(cfg: ClassifyConfig, ctx: RunContext, model: vit.ViT, out: Results) -> Groups:
    """A model on its own classes: held-out accuracy, held-out examples, and photos by an ImageNet model."""
    data = common.load_labelled(cfg, ctx, model)
    groups: Groups = {"held-out": (model, common.split_images(data.val, cfg.count))}
    k = min(cfg.top_k, len(model.classes))
    accuracy = common.topk_accuracy(model, data.val.images, data.val.labels, ctx.device, cfg.batch_size,
                                    tuple(sorted({1, k})))
    for top_k, hit in accuracy.items():
        out.add("val_acc", hit, key=f"val_top{top_k}", top_k=top_k)
    out.notes.append(f"Held-out accuracy over all {len(data.val):,} validation images of {data.name}: "
                     + ", ".join(f"top-{t} {a:.4f}" for t, a in accuracy.items())
                     + (" (ImageNet-1k's own classes: the model's published top-1 is the reference)"
                        if factory.describe(cfg.data).imagenet_labels else "") + ".")
    photo_model, why = (model, "") if len(model.classes) == 1000 else common.imagenet_photo_model(cfg, ctx)
    if photo_model is not None:
        groups["photos"] = (photo_model, _photos(cfg, photo_model, out.notes))
    elif cfg.images:  # no ImageNet model: the user's images still get an answer, with what it means
        groups["your images"] = (model, common.user_images(cfg, model, out.notes))
        out.notes.append(f"No ImageNet ViT weights are at hand ({why}), so your images were classified by this "
                         f"model, whose only classes are {', '.join(model.classes)}: each answer says which of "
                         "those the image resembles most, nothing more. Pass DeiT-Small weights (weights=imagenet, "
                         "as the full preset does) for ImageNet classes.")
    else:
        out.notes.append(f"The sample photos were skipped: no ImageNet ViT weights are available ({why}).")
    return groups


def _classify(group: str, net: vit.ViT, images: dict[str, torch.Tensor], cfg: ClassifyConfig, ctx: RunContext,
              out: Results) -> None:
    """One group's top-k predictions: a table, each image's top-1 probability, figures of at most PER_FIGURE."""
    probs = torch.cat([common.predict(net, img[None], ctx.device, 1) for img in images.values()])
    k = min(cfg.top_k, len(net.classes))
    top = probs.topk(k)
    rows = []
    for i, name in enumerate(images):
        for rank in range(k):
            rows.append([name if rank == 0 else "", rank + 1, net.classes[int(top.indices[i, rank])],
                         float(top.values[i, rank])])
        out.add("top1_prob", float(top.values[i, 0]), key=f"{group}_top1_prob_{i}", group=group, image=name)
    out.tables.append(Table(f"Top-{k} predictions ({group}; {net.arch.image_size}px, "
                            f"{'ImageNet-1k' if len(net.classes) == 1000 else 'digits 0-4'} classes)",
                            ["image", "rank", "class", "probability"], rows))
    names = list(images)
    for part, start in enumerate(range(0, len(names), PER_FIGURE)):
        chunk = {name: images[name] for name in names[start:start + PER_FIGURE]}
        part_rows = slice(start, start + PER_FIGURE)
        suffix = f"_{part + 1}" if len(names) > PER_FIGURE else ""
        out.add_figures(ctx.save_figure(predictions_figure(chunk, top.values[part_rows], top.indices[part_rows],
                                                           net.classes), f"predictions_{group}{suffix}"))


PER_FIGURE = 8
"""Images per predictions figure: two per row, four rows, one figure a page column can hold."""


@figures.styled
def predictions_figure(images: dict[str, torch.Tensor], values: torch.Tensor, indices: torch.Tensor,
                       classes: list[str]) -> Any:
    """Two images per row, each beside its top-k bars; the probability axis ends just past the largest bar of the
    figure (stated on the axis), so flat predictions stay readable, and every bar carries its value."""
    n = len(images)
    rows = math.ceil(n / 2)
    fig, axes = figures.figure(4 if n > 1 else 2, rows, width=2.0, height=1.45 * rows + 0.2)
    top = min(1.0, float(values.max()) * 1.3) if len(values) else 1.0
    for i, (name, img) in enumerate(images.items()):
        picture, bars = axes[i // 2][2 * (i % 2)], axes[i // 2][2 * (i % 2) + 1]
        picture.imshow(_display(img))
        picture.set_title(name if len(name) <= 24 else "..." + name[-21:], fontsize=6)
        picture.axis("off")
        labels = [classes[int(j)].split(",")[0][:18] for j in indices[i]]
        probs = values[i].numpy()
        positions = list(range(len(labels)))[::-1]
        bars.barh(positions, probs, color="tab:blue")
        bars.set_yticks(positions, labels=labels, fontsize=6)
        for y, p in zip(positions, probs):
            label = f"{p:.2f}" if p >= 0.01 else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"
            bars.text(p + top * 0.02, y, label, va="center", fontsize=5)
        bars.set_xlim(0, top)
        bars.set_xlabel(f"probability (0 to {top:.2g})", fontsize=6)
    for j in range(n, rows * 2 if n > 1 else 1):
        for ax in axes[j // 2][2 * (j % 2):2 * (j % 2) + 2]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def _display(img: torch.Tensor) -> np.ndarray:
    arr = img.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def discuss(results: RunResults) -> list[str]:
    m = results.metrics
    out = []
    if (top1 := m.get("val_acc", top_k=1)) is not None:
        out.append(f"On the held-out images the model's top-1 accuracy is {top1:.3f}.")
    probs = [r.value for r in m.find("top1_prob")]
    if probs:
        out.append(f"The top-1 probability of the shown images ranges from {min(probs):.2f} to {max(probs):.2f}"
                   + ("; the model is confident on all of them." if min(probs) > 0.5 else
                      "; low values mean the model hesitates between classes."))
    return out


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    return f"held-out top-1 {fixed(m.value('val_acc', top_k=1))}"



REFERENCES: tuple[Reference, ...] = (
    Reference("vit.classify", "DeiT-Small/16 ImageNet-1k validation top-1 (resize 248, bicubic, centre crop 224)",
              0.7986, "timm results table (deit_small_patch16_224); facebookresearch/deit README: 79.9", "checked",
              "val_acc", 0.005, {"preset": "full", "data": "imagenet", "arch": "deit_small_patch16_224",
                                 "weights": "imagenet"}, {"top_k": 1}),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(name="vit.classify",
                        summary="ViT top-1/top-5 predictions with probabilities for a few images",
                        config_cls=ClassifyConfig, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
