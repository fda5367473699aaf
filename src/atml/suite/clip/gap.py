"""``clip.gap``: the modality gap in pictures and numbers, closed by a translation, and at random init."""

from __future__ import annotations

import dataclasses
from typing import Any

import matplotlib
import numpy as np
import torch

from atml import figures, views
from atml.analysis import representation as rep
from atml.context import RunContext
from atml.provenance import WeightsInfo
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite.clip import common
from atml.suite.clip.config import GAP_PRESETS as PRESETS
from atml.suite.clip.config import GapConfig


def gap_shift(train_images: torch.Tensor, class_texts: torch.Tensor) -> torch.Tensor:
    """The translation from the image centroid to the text centroid, ``(D,)``.

    Fitted without test data and without labels: the image centroid of the training split's
    embeddings and the text centroid of the class prompts (one per class, so balanced).
    """
    normalize = torch.nn.functional.normalize
    return normalize(class_texts.float(), dim=1).mean(0) - normalize(train_images.float(), dim=1).mean(0)


def close_gap(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings moved by ``shift`` onto the text side, then renormalised."""
    normalize = torch.nn.functional.normalize
    return normalize(normalize(image.float(), dim=1) + shift, dim=1)


@dataclasses.dataclass
class Data:
    """clip.gap's own results data: the first captions paired with the images (what the text side was)."""

    captions: list[str]


def run(cfg: GapConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    data, names = common.load_data(cfg, ctx, model)
    emb, _ = common.image_embeddings(model, data.val.images, cfg, ctx, "test")
    idx = rep.balanced_indices(data.val.labels, cfg.per_class, seed=cfg.seed)
    labels = data.val.labels[idx]
    image = emb[idx]
    text, captions = common.paired_captions(model, labels, names)
    out = Results(notes=common.source_notes(cfg, ctx, model))
    out.keep(Data(captions[:20]))
    out.add("sample", len(idx))
    gap_records(out, common.gap_metrics(image, text))
    # Why zero-shot survives the gap: moving every image by the same vector leaves the ranking of classes
    # almost unchanged. Measured on the whole test split.
    classes = common.class_embeddings(model, common.prompt_sets(names)["photo"])
    out.add("test_acc", float((common.zero_shot(emb, classes) == data.val.labels).float().mean()),
            prompt_set="photo")
    shift = gap_shift(common.image_embeddings(model, data.train.images, cfg, ctx, "train")[0], classes)
    shifted = close_gap(emb, shift)
    out.add("test_acc", float((common.zero_shot(shifted, classes) == data.val.labels).float().mean()),
            key="test_acc_photo_gap_closed", prompt_set="photo", embeddings="gap closed")
    closed = common.gap_metrics(shifted[idx], text)
    for name in ("centroid_distance", "paired_cosine"):
        out.add(name, closed[name], key=f"gap_closed_{name}", embeddings="gap closed")
    ctx.step(f"joint t-SNE and UMAP of {len(idx)} images and their captions")
    layouts = joint_layouts(image, text, cfg.seed)
    out.add_figures(ctx.save_figure(joint_figure(layouts, labels), "modality_gap_embeddings"))
    predicted = common.zero_shot(image, classes)
    out.views += ctx.save_view(joint_view(layouts, labels, predicted, names, captions,
                                          ctx.thumbnails(data.val.images[idx])), "modality_gap_embeddings")
    notes = out.notes
    weights = ctx.sources.get("weights")
    trained = isinstance(weights, WeightsInfo) and weights.pretrained
    if cfg.random_init and trained:
        _random_init(cfg, ctx, data.val.images[idx], labels, names, out)
    notes.append(f"Joint embeddings: t-SNE ({rep.tsne_backend()}) and UMAP on both modalities together, after PCA "
                 "to 50 dimensions; 'normalised' = each embedding L2-normalised first.")
    notes.append(f"Sample: {len(idx)} test images, {cfg.per_class} per class, each paired with one caption of its "
                 "class (the 18 CIFAR templates in turn). 'Gap closed': every test image embedding moved by the "
                 f"difference between the centroid of the class prompts ('a photo of a {{}}.') and the centroid of "
                 f"the {len(data.train)} training images, then renormalised; no test image and no label is used to "
                 "fit the shift.")
    out.tables.append(_table(out.metrics, trained))
    return out


def _random_init(cfg: GapConfig, ctx: RunContext, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                 out: Results) -> None:
    """The same images and captions through the untrained architecture: its gap, and its joint t-SNE."""
    random_model = common.load_model(cfg, ctx, weights="random", source_key="random_init_weights")
    r_img, _ = common.compute_embeddings(random_model, images, ctx.device, cfg.batch_size, cfg.amp)
    r_txt, _ = common.paired_captions(random_model, labels, names)
    gap_records(out, common.gap_metrics(r_img, r_txt), model="random init")
    layouts = joint_layouts(r_img, r_txt, cfg.seed, methods=("tsne",))
    out.add_figures(ctx.save_figure(joint_figure(layouts, labels, title="random initialisation"),
                                    "modality_gap_random_init"))
    out.notes.append(f"Random initialisation: the same architecture with open_clip's initialisation (seed {cfg.seed}), "
                     "no training, on the same images and captions.")


def _table(m: Metrics, trained: bool) -> Table:
    random = m.get("centroid_distance", model="random init") is not None
    return Table("The modality gap in numbers (L2-normalised embeddings unless 'norm')",
                 ["measure", "trained" if trained else "this model",
                  *(["random init"] if random else [])],
                 [[k, m.get(k), *([m.get(k, model="random init")] if random else [])] for k in common.GAP_MEASURES])


def gap_records(out: Results, values: dict[str, float], **condition: str) -> None:
    """The gap measures as records; ``model="random init"`` keeps the older ``random_init_`` flat names."""
    for name, value in values.items():
        key = f"random_init_{name}" if condition.get("model") == "random init" else None
        out.add(name, value, key=key, **condition)


def joint_layouts(image: torch.Tensor, text: torch.Tensor, seed: int,
                  methods: tuple[str, ...] = ("tsne", "umap")) -> dict[tuple[str, str], np.ndarray]:
    """Joint 2-D embeddings of both modalities (images first, then their captions), raw and L2-normalised, per
    (method, scaling)."""
    out = {}
    for method in methods:
        for scaling in ("raw", "normalised"):
            x = torch.cat([image, text]).double()
            if scaling == "normalised":
                x = torch.nn.functional.normalize(x, dim=1)
            out[(method, scaling)] = (rep.tsne if method == "tsne" else rep.umap_embed)(x.numpy(), seed=seed)
    return out


def _panel_name(method: str, scaling: str) -> str:
    return f"{method.upper() if method == 'umap' else 't-SNE'}, {scaling}"


@figures.styled
def joint_figure(layouts: dict[tuple[str, str], np.ndarray], labels: torch.Tensor, title: str = "") -> Any:
    """The joint embeddings of :func:`joint_layouts`, one panel per (method, scaling): images dots, captions
    triangles, coloured by class."""
    fig, axes = figures.figure(len(layouts), width=2.0, height=2.4)
    n = len(labels)
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(int(c) % 10) for c in labels]
    for col, ((method, scaling), xy) in enumerate(layouts.items()):
        ax = axes[0][col]
        ax.scatter(xy[:n, 0], xy[:n, 1], c=colours, marker="o", s=8, label="image")
        ax.scatter(xy[n:, 0], xy[n:, 1], c=colours, marker="^", s=10, edgecolors="k", linewidths=0.3,
                   label="text")
        ax.set_title(_panel_name(method, scaling))
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(frameon=False, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def joint_view(layouts: dict[tuple[str, str], np.ndarray], labels: torch.Tensor, predicted: torch.Tensor,
               names: list[str], captions: list[str], sheet: views.Sheet | None) -> views.Scatter:
    """The joint embeddings to hover: an image shows its thumbnail, class, zero-shot prediction and paired caption;
    a caption its text and class."""
    n = len(labels)
    classes = np.concatenate([labels.numpy(), labels.numpy()])
    return views.Scatter(f"Images and their captions in one embedding ({n} of each)",
                         {_panel_name(*key): xy for key, xy in layouts.items()}, classes, list(names),
                         thumbs=np.concatenate([np.arange(n), np.full(n, -1)]), sheet=sheet,
                         predicted=np.concatenate([predicted.numpy(), np.full(n, -1)]),
                         predicted_by="zero-shot, 'a photo of a {}.'", captions=[*captions, *captions],
                         kinds=np.repeat(np.array([0, 1], dtype=np.uint8), n), kind_names=("image", "caption"))


def discuss(results: RunResults) -> list[str]:
    m = results.metrics
    if m.get("centroid_distance") is None:
        return []
    return [_gap_sentence(m), _norm_sentence(m), _closing_sentence(m), *_random_init_sentence(m)]


def _gap_sentence(m: Metrics) -> str:
    v = m.value
    cones = min(v("image_image_cosine"), v("text_text_cosine")) > v("paired_cosine")
    return (f"Images and their captions sit {v('centroid_distance'):.2f} apart (distance of the normalised centroids, "
            f"2 at most); a paired image and caption have cosine {v('paired_cosine'):.2f}, two images "
            f"{v('image_image_cosine'):.2f} and two captions {v('text_text_cosine'):.2f}: "
            + ("each modality is closer to itself than to its own pairs, two separate cones."
               if cones else "pairs are at least as close as members of one modality, so no separate cones here.")
            + f" The gap direction carries {v('gap_variance_share'):.0%} of the joint variance.")


def _norm_sentence(m: Metrics) -> str:
    img, txt, distance = m.value("image_norm"), m.value("text_norm"), m.value("centroid_distance")
    norms = (f"Raw norms differ (images {img:.2f}, texts {txt:.2f})" if abs(img - txt) > 0.05 * max(img, txt)
             else f"Raw norms are close (images {img:.2f}, texts {txt:.2f})")
    if distance > GAP_THRESHOLD:
        return (norms + f"; after L2-normalisation the centroids are still {distance:.2f} apart: the "
                "gap is a difference of directions, not of norms.")
    return norms + "; after L2-normalisation the centroids nearly coincide."


def _closing_sentence(m: Metrics) -> str:
    before = m.value("test_acc", prompt_set="photo")
    after = m.value("test_acc", prompt_set="photo", embeddings="gap closed")
    change = after - before
    text = (f"Zero-shot accuracy on the whole test split is {before:.3f} as is and {after:.3f} with the gap closed "
            "by a translation fitted on training images and the class prompts. ")
    if abs(change) < 0.02:
        return text + ("Closing it changes accuracy by less than 2 points: a translation adds nearly the same amount "
                       "to every class's score, so the ranking zero-shot relies on survives the gap.")
    return text + (f"Closing it moves accuracy by {change * 100:+.1f} points: the translation changes the classes' "
                   "scores by different amounts, so the gap is not neutral for this model's ranking.")


def _random_init_sentence(m: Metrics) -> list[str]:
    distance = m.get("centroid_distance", model="random init")
    if distance is None:
        return []
    cosine = m.value("paired_cosine", model="random init")
    if distance > GAP_THRESHOLD:
        return [f"At random initialisation the centroids are already {distance:.2f} apart (paired cosine "
                f"{cosine:.2f}): the gap exists before any training (the cone effect of Liang et al. 2022)."]
    return [f"At random initialisation the centroids are only {distance:.2f} apart (paired cosine {cosine:.2f}): "
            "in this model the gap appears with training rather than at initialisation."]


GAP_THRESHOLD = 0.1
"""Centroid distance (normalised embeddings, at most 2) below which the report calls the modalities coincident."""


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    text = (f"centroid distance {fixed(m.value('centroid_distance'), 2)}, "
            f"paired cosine {fixed(m.value('paired_cosine'), 2)}")
    if (random := m.get("centroid_distance", model="random init")) is not None:
        text += f" (random init: {fixed(random, 2)})"
    return text + (f"; zero-shot {fixed(m.value('test_acc', prompt_set='photo'))} as is, "
                   f"{fixed(m.value('test_acc', prompt_set='photo', embeddings='gap closed'))} with the gap closed")



REFERENCES: tuple[Reference, ...] = (
    Reference("clip.gap", "the modality gap already exists at random initialisation (cone effect)", None,
              "Liang et al. 2022, Mind the Gap", "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="clip.gap",
                        summary="The modality gap: joint t-SNE/UMAP, distances, variance share, random init",
                        config_cls=GapConfig, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
