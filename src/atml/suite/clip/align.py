"""``clip.align``: orthogonal Procrustes from image to caption embeddings, fitted on training pairs only."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import torch

from atml import figures
from atml.analysis import representation as rep
from atml.context import RunContext
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite.clip import common
from atml.suite.clip.config import ALIGN_PRESETS as PRESETS
from atml.suite.clip.config import GapConfig


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` minimising ``||source @ R - target||_F`` (scipy)."""
    from scipy.linalg import orthogonal_procrustes

    rotation, _ = orthogonal_procrustes(source, target)
    result: np.ndarray = rotation
    return result


def run(cfg: GapConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    data, names = common.load_data(cfg, ctx, model)
    train_emb, _ = common.image_embeddings(model, data.train.images, cfg, ctx, "train")
    test_emb, _ = common.image_embeddings(model, data.val.images, cfg, ctx, "test")
    norm = torch.nn.functional.normalize
    train_txt, _ = common.paired_captions(model, data.train.labels, names)
    test_txt, _ = common.paired_captions(model, data.val.labels, names)
    a, b = norm(train_emb.double(), dim=1).numpy(), norm(train_txt.double(), dim=1).numpy()
    rotation = procrustes(a, b)
    aligned = torch.from_numpy(norm(test_emb.double(), dim=1).numpy() @ rotation).float()
    t_test = norm(test_txt.double(), dim=1).numpy()
    out = Results(notes=common.source_notes(cfg, ctx, model))
    out.add("fit_pairs", len(a))
    _fit_quality(out, rotation, a, b, aligned.double().numpy(), norm(test_emb.double(), dim=1).numpy(), t_test)
    for name in ("photo", "cifar18"):
        classes = common.class_embeddings(model, common.prompt_sets(names)[name])
        for when, emb in (("before", test_emb), ("after", aligned)):
            out.add("acc", float((common.zero_shot(emb, classes) == data.val.labels).float().mean()), prompt_set=name,
                    when=when)
    idx = rep.balanced_indices(data.val.labels, cfg.per_class, seed=cfg.seed)
    for when, emb in (("before", test_emb), ("after", aligned)):
        gap = common.gap_metrics(emb[idx], test_txt[idx])
        for name in ("centroid_distance", "paired_cosine"):
            out.add(name, gap[name], when=when)
    out.add_figures(ctx.save_figure(alignment_figure(norm(test_emb[idx], dim=1), aligned[idx],
                                                     norm(test_txt[idx], dim=1), data.val.labels[idx]),
                                    "alignment_projection"))
    out.notes.append(f"Orthogonal Procrustes (scipy.linalg.orthogonal_procrustes) fitted on the {len(a)} training "
                     "images and one caption of their class each, L2-normalised, then applied to the test images only. "
                     "It uses the training labels (through the captions), so accuracy 'after' is no longer zero-shot "
                     "in the strict sense; 'before' is.")
    out.tables.append(_table(out.metrics))
    return out


def _fit_quality(out: Results, rotation: np.ndarray, a: np.ndarray, b: np.ndarray, aligned: np.ndarray,
                 before: np.ndarray, t_test: np.ndarray) -> None:
    """Relative residuals on the training pairs and the test split, before and after; how orthogonal the fit is."""
    residuals = {("train", "after"): np.linalg.norm(a @ rotation - b) / np.linalg.norm(b),
                 ("train", "before"): np.linalg.norm(a - b) / np.linalg.norm(b),
                 ("test", "after"): np.linalg.norm(aligned - t_test) / np.linalg.norm(t_test),
                 ("test", "before"): np.linalg.norm(before - t_test) / np.linalg.norm(t_test)}
    for (split, when), value in residuals.items():
        out.add("residual", float(value), key=f"residual_{split}" + ("_before" if when == "before" else ""),
                split=split, when=when)
    out.add("orthogonality_error", float(np.abs(rotation.T @ rotation - np.eye(len(rotation))).max()))
    out.add("determinant", float(np.linalg.det(rotation)))


def _table(m: Metrics) -> Table:
    def pair(name: str, **condition: Any) -> list[float | None]:
        return [m.get(name, when="before", **condition), m.get(name, when="after", **condition)]

    return Table("Procrustes alignment of image embeddings onto text embeddings (test split unless stated)",
                 ["measure", "before", "after"],
                 [["relative residual (train)", *pair("residual", split="train")],
                  ["relative residual (test)", *pair("residual", split="test")],
                  ["centroid distance", *pair("centroid_distance")],
                  ["paired cosine", *pair("paired_cosine")],
                  ["zero-shot acc, 'a photo of a {}.'", *pair("acc", prompt_set="photo")],
                  ["zero-shot acc, 18 CIFAR templates", *pair("acc", prompt_set="cifar18")]])


@figures.styled
def alignment_figure(before: torch.Tensor, after: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> Any:
    """Before and after in one shared PCA projection (fitted on all three sets together)."""
    from sklearn.decomposition import PCA

    n = len(before)
    joint = torch.cat([before, after, text]).double().numpy()
    xy = PCA(2).fit_transform(joint)
    fig, axes = figures.figure(2, width=2.0, height=2.4)
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(int(c) % 10) for c in labels]
    for ax, (start, title) in zip(axes[0], ((0, "before"), (n, "after Procrustes"))):
        ax.scatter(xy[start:start + n, 0], xy[start:start + n, 1], c=colours, s=8, marker="o", label="image")
        ax.scatter(xy[2 * n:, 0], xy[2 * n:, 1], c=colours, s=10, marker="^", edgecolors="k", linewidths=0.3,
                   label="text")
        ax.set_title(f"{title} (shared PCA)")
    lo, hi = xy.min(0), xy.max(0)
    for ax in axes[0]:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    return fig


def discuss(results: RunResults) -> list[str]:
    m = results.metrics
    if m.get("residual", split="test", when="after") is None:
        return []

    def v(name: str, when: str, **condition: str) -> float:
        return m.value(name, when=when, **condition)

    cut = v("residual", "after", split="test") < v("residual", "before", split="test")
    residual = "cuts" if cut else "does not cut"
    centroid = "falls" if v("centroid_distance", "after") < v("centroid_distance", "before") else "does not fall"
    return [f"The rotation is orthogonal to {m.value('orthogonality_error'):.1e} and {residual} the test residual "
            f"({v('residual', 'before', split='test'):.2f} before, {v('residual', 'after', split='test'):.2f} after); "
            f"the centroid distance {centroid} ({v('centroid_distance', 'before'):.2f} -> "
            f"{v('centroid_distance', 'after'):.2f}).",
            f"Zero-shot accuracy with 'a photo of a {{}}.' goes from {v('acc', 'before', prompt_set='photo'):.3f} to "
            f"{v('acc', 'after', prompt_set='photo'):.3f} (18 templates: "
            f"{v('acc', 'before', prompt_set='cifar18'):.3f} "
            f"-> {v('acc', 'after', prompt_set='cifar18'):.3f}); a rotation keeps all angles between images, so what "
            "changes is only how images face the class texts."]


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""

    def v(name: str, when: str, digits: int = 2, **condition: str) -> str:
        return fixed(m.value(name, when=when, **condition), digits)

    return (f"test residual {v('residual', 'before', split='test')} -> {v('residual', 'after', split='test')}, "
            f"centroid distance {v('centroid_distance', 'before')} -> {v('centroid_distance', 'after')}; zero-shot "
            f"{v('acc', 'before', 3, prompt_set='photo')} -> {v('acc', 'after', 3, prompt_set='photo')} (photo prompt)")



REFERENCES: tuple[Reference, ...] = (
    Reference("clip.align", "the modality gap already exists at random initialisation (cone effect)", None,
              "Liang et al. 2022, Mind the Gap", "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(name="clip.align",
                        summary="Orthogonal Procrustes from image to text embeddings, fitted on train pairs",
                        config_cls=GapConfig, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
