"""``clip.align``: orthogonal Procrustes from image to caption embeddings, fitted on training pairs only."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from atml.analysis import representation as rep
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.experiments.clip import common


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` minimising ``||source @ R - target||_F`` (scipy)."""
    from scipy.linalg import orthogonal_procrustes

    rotation, _ = orthogonal_procrustes(source, target)
    return rotation


def run(cfg: common.GapConfig, ctx: RunContext) -> dict[str, Any]:
    model = common.load_model(cfg, ctx)
    data, names = common.load_data(cfg, ctx)
    train_emb = common.image_embeddings(model, data.train.images, cfg, ctx, "train")
    test_emb = common.image_embeddings(model, data.val.images, cfg, ctx, "test")
    norm = torch.nn.functional.normalize
    train_txt, _ = common.paired_captions(model, data.train.labels, names)
    test_txt, _ = common.paired_captions(model, data.val.labels, names)
    a, b = norm(train_emb.double(), dim=1).numpy(), norm(train_txt.double(), dim=1).numpy()
    rotation = procrustes(a, b)
    aligned = torch.from_numpy(norm(test_emb.double(), dim=1).numpy() @ rotation).float()
    t_test = norm(test_txt.double(), dim=1).numpy()
    metrics: dict[str, Any] = {
        "fit_pairs": len(a),
        "residual_train": float(np.linalg.norm(a @ rotation - b) / np.linalg.norm(b)),
        "residual_train_before": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
        "residual_test": float(np.linalg.norm(aligned.double().numpy() - t_test) / np.linalg.norm(t_test)),
        "residual_test_before": float(np.linalg.norm(norm(test_emb.double(), dim=1).numpy() - t_test)
                                      / np.linalg.norm(t_test)),
        "orthogonality_error": float(np.abs(rotation.T @ rotation - np.eye(len(rotation))).max()),
        "determinant": float(np.linalg.det(rotation)),
    }
    for name in ("photo", "cifar18"):
        classes = common.class_embeddings(model, common.prompt_sets(names)[name])
        metrics[f"acc_{name}_before"] = float((common.zero_shot(test_emb, classes) == data.val.labels).float().mean())
        metrics[f"acc_{name}_after"] = float((common.zero_shot(aligned, classes) == data.val.labels).float().mean())
    idx = rep.balanced_indices(data.val.labels, cfg.per_class, seed=cfg.seed)
    before = common.gap_metrics(test_emb[idx], test_txt[idx])
    after = common.gap_metrics(aligned[idx], test_txt[idx])
    metrics |= {f"{k}_before": before[k] for k in ("centroid_distance", "paired_cosine")}
    metrics |= {f"{k}_after": after[k] for k in ("centroid_distance", "paired_cosine")}
    figures = ctx.save_figure(alignment_figure(norm(test_emb[idx], dim=1), aligned[idx], norm(test_txt[idx], dim=1),
                                               data.val.labels[idx]), "alignment_projection")
    notes = common.source_notes(cfg, ctx)
    notes.append(f"Orthogonal Procrustes (scipy.linalg.orthogonal_procrustes) fitted on the {len(a)} training images "
                 "and one caption of their class each, L2-normalised, then applied to the test images only. It uses "
                 "the training labels (through the captions), so accuracy 'after' is no longer zero-shot in the "
                 "strict sense; 'before' is.")
    table = {"title": "Procrustes alignment of image embeddings onto text embeddings (test split unless stated)",
             "columns": ["measure", "before", "after"],
             "rows": [["relative residual (train)", metrics["residual_train_before"], metrics["residual_train"]],
                      ["relative residual (test)", metrics["residual_test_before"], metrics["residual_test"]],
                      ["centroid distance", metrics["centroid_distance_before"], metrics["centroid_distance_after"]],
                      ["paired cosine", metrics["paired_cosine_before"], metrics["paired_cosine_after"]],
                      ["zero-shot acc, 'a photo of a {}.'", metrics["acc_photo_before"], metrics["acc_photo_after"]],
                      ["zero-shot acc, 18 CIFAR templates", metrics["acc_cifar18_before"], metrics["acc_cifar18_after"]]]}
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": notes}


@plots.styled
def alignment_figure(before: torch.Tensor, after: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> Any:
    """Before and after in one shared PCA projection (fitted on all three sets together)."""
    from sklearn.decomposition import PCA

    n = len(before)
    joint = torch.cat([before, after, text]).double().numpy()
    xy = PCA(2).fit_transform(joint)
    fig, axes = plots.figure(2, width=2.0, height=2.4)
    cmap = plots.plt.get_cmap("tab10")
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


def discuss(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    if "residual_test" not in m:
        return []
    residual = "cuts" if m["residual_test"] < m["residual_test_before"] else "does not cut"
    centroid = "falls" if m["centroid_distance_after"] < m["centroid_distance_before"] else "does not fall"
    return [f"The rotation is orthogonal to {m['orthogonality_error']:.1e} and {residual} the test residual "
            f"({m['residual_test_before']:.2f} before, {m['residual_test']:.2f} after); the centroid distance "
            f"{centroid} ({m['centroid_distance_before']:.2f} -> {m['centroid_distance_after']:.2f}).",
            f"Zero-shot accuracy with 'a photo of a {{}}.' goes from {m['acc_photo_before']:.3f} to "
            f"{m['acc_photo_after']:.3f} (18 templates: {m['acc_cifar18_before']:.3f} -> {m['acc_cifar18_after']:.3f}); "
            "a rotation keeps all angles between images, so what changes is only how images face the class texts."]


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**common.SMOKE, "per_class": 3},
    "demo": common.DEMO,
    "full": {},
    "rehearsal": common.REHEARSAL,
}

EXPERIMENT = Experiment(name="clip.align",
                        summary="Orthogonal Procrustes from image to text embeddings, fitted on train pairs",
                        config_cls=common.GapConfig, presets=PRESETS, run=run, discuss=discuss)
