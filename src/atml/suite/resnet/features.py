"""``resnet.features``: the feature hierarchy of a frozen ResNet, in numbers and pictures.

Features of early, middle and late stages (forward hooks, global-average-pooled) for a
class-balanced sample of the validation split; per depth: k-NN accuracy, linear-probe
accuracy and silhouette, linear CKA between depths, t-SNE and UMAP embeddings (and how
well each separates the classes in 2-D), the confusion matrix of the late-layer probe,
the closest class pairs, and the same numbers for a second, shallower architecture.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from matplotlib.lines import Line2D

from atml import figures, views
from atml.analysis import representation as rep
from atml.context import RunContext
from atml.models import cnn, freezing
from atml.models import layers as layers_lib
from atml.models.preprocess import Preprocess
from atml.provenance import random_weights
from atml.registry import Experiment
from atml.results import Metric, Metrics, Results, RunResults, Table, fixed
from atml.suite.resnet import common
from atml.suite.resnet.config import FEATURES_PRESETS as PRESETS
from atml.suite.resnet.config import FeaturesConfig as Config

DEPTHS = ("early", "middle", "late")
"""The first stage, the one before the last, the last (ResNet: layer1, layer3, layer4; see cnn.depth_stages)."""
METHODS = ("tsne", "umap")


@torch.inference_mode()
def depth_features(model: cnn.CNN | cnn.CNNClassifier, prep: torch.nn.Module, images: torch.Tensor,
                   device: torch.device, batch_size: int) -> dict[str, np.ndarray]:
    """``{depth: (N, channels)}`` pooled stage outputs; hooks are gone when this returns."""
    model.eval()
    layers = {depth: model.get_submodule(path) for depth, path in cnn.depth_stages(model.stage_paths).items()}
    chunks: dict[str, list[torch.Tensor]] = {depth: [] for depth in layers}
    with layers_lib.recorded(model, layers) as out:  # pooled over positions, kept on the device
        for batch in images.split(batch_size):
            model.forward_features(prep(batch.to(device)))
            for depth in layers:
                chunks[depth].append(out[depth])
    return {depth: torch.cat(parts).cpu().numpy() for depth, parts in chunks.items()}  # one copy per depth


def measure(features: dict[str, np.ndarray], labels: np.ndarray, seed: int, arch: str, compare: bool = False,
            device: torch.device | None = None) -> tuple[list[Metric], dict[str, np.ndarray]]:
    """k-NN accuracy, linear-probe accuracy and silhouette per depth, for one architecture, and the probe's
    out-of-fold predictions per depth; ``device``: where the probes run (:func:`rep.probe_device`)."""
    out, predictions = [], {}
    prefix = "compare_" if compare else ""
    for depth, feats in features.items():
        probe_acc, predictions[depth] = rep.linear_probe(feats, labels, seed=seed, device=device)
        values = {"knn_acc": rep.knn_accuracy(feats, labels, seed=seed, device=device), "probe_acc": probe_acc,
                  "silhouette": rep.silhouette(feats, labels)}
        out += [Metric(name, value, condition={"arch": arch, "depth": depth}, flat_key=f"{prefix}{name}_{depth}")
                for name, value in values.items()]
    return out, predictions


def run(cfg: Config, ctx: RunContext) -> Results:
    data = common.load_data(cfg, ctx)
    idx = rep.balanced_indices(data.val.labels, cfg.per_class, seed=cfg.seed)
    images, labels = data.val.images[idx], data.val.labels[idx].numpy()
    names = [data.val.names[i] for i in idx.tolist()] if data.val.names is not None else None
    classes = data.val.classes
    feats, stages = {}, {}
    for key, arch in (("weights", cfg.arch), ("compare_weights", cfg.compare_arch)):
        if arch:
            feats[arch], stages[arch] = _features(cfg, ctx, arch, key, images, len(classes))
    main = feats[cfg.arch]
    out = Results()
    ctx.step(f"{cfg.arch}: k-NN, linear probes and silhouette per depth")
    probes = rep.probe_device(ctx.device)
    metrics, probed = measure(main, labels, cfg.seed, cfg.arch, device=probes)
    out.metrics.records += metrics
    for i, a in enumerate(DEPTHS):
        for b in DEPTHS[i + 1:]:
            out.add("cka", rep.linear_cka(main[a], main[b]), depth_a=a, depth_b=b)
    embeddings = _embeddings(cfg, ctx, main, labels, out)
    predictions = probed["late"]  # the late probe's out-of-fold predictions, already made above
    matrix = rep.confusion(labels, predictions, len(classes))
    pairs = [(classes[i], classes[j], s) for i, j, s in rep.closest_class_pairs(main["late"], labels)]
    if cfg.compare_arch:
        ctx.step(f"{cfg.compare_arch}: k-NN, linear probes and silhouette per depth")
        out.metrics.records += measure(feats[cfg.compare_arch], labels, cfg.seed, cfg.compare_arch, compare=True,
                                       device=probes)[0]
    out.add_figures(ctx.save_figure(embedding_figure(embeddings, labels, classes, stages[cfg.arch]), "embeddings"))
    keep = views.spread_indices(len(labels))  # the points the page shows, their thumbnails in that order
    out.views += ctx.save_view(embedding_view(embeddings, labels, predictions, classes, stages[cfg.arch], keep,
                                              ctx.thumbnails(images[torch.from_numpy(keep)]), cfg.arch,
                                              [names[i] for i in keep] if names else None), "embeddings")
    out.add_figures(ctx.save_figure(cka_figure(out.metrics), "cka"))
    out.add_figures(ctx.save_figure(confusion_figure(matrix, classes), "confusion_late_probe"))
    out.add_figures(ctx.save_figure(depth_figure(out.metrics, cfg), "separability_vs_depth"))
    out.tables += tables(out.metrics, cfg, pairs)
    out.keep(Data(cfg.arch, list(classes), matrix.tolist(), len(labels), stages, pairs, cfg.compare_arch))
    _say_what_was_measured(cfg, labels, len(classes), stages, out)
    out.notes += common.weights_notes(ctx)
    return out


def _features(cfg: Config, ctx: RunContext, arch: str, key: str, images: torch.Tensor,
              num_classes: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``arch``'s frozen features at every depth, and the module each depth was read from."""
    backbone = common.load_backbone(dataclasses.replace(cfg, arch=arch), ctx, num_classes, source_key=key)
    cnn.check_input_size(backbone.model, cfg.resolution, arch)
    model = freezing.freeze(backbone.model, trainable=()).to(ctx.device)  # BatchNorm folded: same features
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocess(backbone.preprocessing, cfg.resolution, channels_last=cfg.channels_last).to(ctx.device)
    stages = {d: p.removeprefix("body.") for d, p in cnn.depth_stages(model.stage_paths).items()}
    ctx.step(f"{arch}: features of {len(images)} images at {len(DEPTHS)} depths")
    return depth_features(model, prep, images, ctx.device, cfg.batch_size), stages


def _embeddings(cfg: Config, ctx: RunContext, feats: dict[str, np.ndarray], labels: np.ndarray,
                out: Results) -> dict[tuple[str, str], np.ndarray]:
    """t-SNE and UMAP of every depth, each scored by 2-D k-NN and silhouette (recorded in ``out``)."""
    ctx.step(f"t-SNE ({rep.tsne_backend()}) and UMAP of {len(DEPTHS)} depths")
    embeddings = {(depth, method): (rep.tsne if method == "tsne" else rep.umap_embed)(feats[depth], seed=cfg.seed)
                  for depth in DEPTHS for method in METHODS}
    for (depth, method), points in embeddings.items():
        out.add("knn_acc_2d", rep.knn_accuracy(points, labels, seed=cfg.seed), key=f"{method}_knn_acc_{depth}",
                method=method, depth=depth)
        out.add("silhouette_2d", rep.silhouette(points, labels, metric="euclidean"),
                key=f"{method}_silhouette_{depth}", method=method, depth=depth)
    return embeddings


def _say_what_was_measured(cfg: Config, labels: np.ndarray, num_classes: int, stages: dict[str, dict[str, str]],
                           out: Results) -> None:
    """The notes (images per class, depths, methods) and a warning when a class is too small for the k-NN folds."""
    counts = np.bincount(labels, minlength=num_classes)
    per_class = (f"{counts.min()} per class" if counts.min() == counts.max()
                 else f"{counts.min()}-{counts.max()} per class")
    if counts.min() < cfg.per_class:
        per_class += f"; {cfg.per_class} asked for, the split has no more"
    folds = int(min(5, counts.min()))
    if counts.min() * (folds - 1) // max(folds, 1) <= 5:  # k-NN with k = 5 needs more than 5 neighbours per class
        out.warnings.append(f"k-NN (k=5) and the probes ran on {counts.min()} image(s) in the smallest class, so "
                            "a cross-validation fold has 5 or fewer of that class to learn from: these accuracies "
                            "are noisy; pass a larger split or more per_class")
    out.notes.append(f"{len(labels)} validation images ({per_class}), {cfg.resolution} px; depths: "
                     + "; ".join(f"{arch}: " + ", ".join(f"{d} = output of {s}" for d, s in named.items())
                                 for arch, named in stages.items()) + " (global-average-pooled). "
                     "k-NN (k=5, cosine) and logistic-regression probe accuracies are 5-fold cross-validated; "
                     f"t-SNE ({rep.tsne_backend()}, perplexity {rep.perplexity_for(len(labels)):.3g}) and UMAP "
                     "run on the first 50 principal components.")


def tables(metrics: Metrics, cfg: Config, pairs: list[tuple[str, str, float]]) -> list[Table]:
    archs = [cfg.arch] + ([cfg.compare_arch] if cfg.compare_arch else [])
    rows = [[arch, depth, *(metrics.get(n, arch=arch, depth=depth) for n in ("knn_acc", "probe_acc", "silhouette"))]
            for arch in archs for depth in DEPTHS]
    embed = [[depth, method, metrics.get("knn_acc_2d", method=method, depth=depth),
              metrics.get("silhouette_2d", method=method, depth=depth)] for depth in DEPTHS for method in METHODS]
    return [Table("Class separation per depth", ["arch", "depth", "k-NN acc", "linear probe acc", "silhouette"], rows),
            Table(f"t-SNE vs UMAP: separation in 2-D ({cfg.arch})",
                  ["depth", "method", "k-NN acc (2-D)", "silhouette (2-D)"], embed),
            Table("Most similar classes (cosine of late-feature centroids)", ["class", "class", "cosine"],
                  [list(p) for p in pairs])]


@figures.styled
def embedding_figure(embeddings: dict[tuple[str, str], np.ndarray], labels: np.ndarray, classes: list[str],
                     stages: dict[str, str]) -> Any:
    fig, axes = figures.figure(len(DEPTHS), len(METHODS), width=2.0, height=4.2)
    for row, method in enumerate(METHODS):
        for col, depth in enumerate(DEPTHS):
            ax = axes[row][col]
            points = embeddings[(depth, method)]
            scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, vmin=0, vmax=9)
            ax.set_title(f"{method.upper() if method == 'umap' else 't-SNE'}, {depth} ({stages[depth]})")
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Line2D([], [], marker="o", ls="", color=scatter.cmap(scatter.norm(i)), label=c)
               for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(10, len(classes)), frameon=False, fontsize=6)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def embedding_view(embeddings: dict[tuple[str, str], np.ndarray], labels: np.ndarray, predictions: np.ndarray,
                   classes: list[str], stages: dict[str, str], keep: np.ndarray, sheet: views.Sheet | None,
                   arch: str, names: list[str] | None = None) -> views.Scatter:
    """The embeddings of :func:`embedding_figure` at the points ``keep``, one panel each, to hover: each point's
    image (tile i of ``sheet``), class and the late probe's out-of-fold prediction."""
    panels = {f"{'UMAP' if method == 'umap' else 't-SNE'}, {depth} ({stages[depth]})": embeddings[(depth, method)][keep]
              for method in METHODS for depth in DEPTHS}
    return views.Scatter(f"{arch}: t-SNE and UMAP of {len(keep)} validation images per depth", panels, labels[keep],
                         list(classes), thumbs=np.arange(len(keep)), sheet=sheet, predicted=predictions[keep],
                         predicted_by="late-feature linear probe (out-of-fold)", names=names)


@figures.styled
def cka_figure(metrics: Metrics) -> Any:
    names = [d for d in DEPTHS]
    grid = np.eye(len(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i < j:
                grid[i, j] = grid[j, i] = metrics.value("cka", depth_a=a, depth_b=b)
    fig, axes = figures.figure(1, width=1.0, height=2.4)
    ax = axes[0][0]
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), labels=names)
    ax.set_yticks(range(len(names)), labels=names)
    ax.grid(False)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k")
    ax.set_title("linear CKA between depths")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


@figures.styled
def confusion_figure(matrix: np.ndarray, classes: list[str]) -> Any:
    fig, axes = figures.figure(1, width=1.0, height=3.0)
    ax = axes[0][0]
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class", fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(classes)), labels=classes, rotation=90)
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    ax.set_title("late-feature linear probe (out-of-fold)")
    fig.tight_layout()
    return fig


@figures.styled
def depth_figure(metrics: Metrics, cfg: Config) -> Any:
    fig, axes = figures.figure(1, width=1.0, height=2.4)
    ax = axes[0][0]
    x = range(len(DEPTHS))
    archs = [(cfg.arch, "-")] + ([(cfg.compare_arch, ":")] if cfg.compare_arch else [])
    for arch, style in archs:
        for i, key in enumerate(("knn_acc", "probe_acc", "silhouette")):
            ax.plot(x, [metrics.value(key, arch=arch, depth=d) for d in DEPTHS], style, marker="o",
                    color=figures.palette(i))
    ax.set_xticks(list(x), labels=[d for d in DEPTHS])
    ax.set_ylabel("score")
    handles = [Line2D([], [], color=figures.palette(i), marker="o", label=label)
               for i, label in enumerate(("k-NN accuracy", "probe accuracy", "silhouette"))]
    handles += [Line2D([], [], color="0.35", ls=style, label=arch) for arch, style in archs]
    figures.legend_below(fig, handles, ncol=3)
    return fig


@dataclasses.dataclass
class Data:
    """resnet.features' own results data: the architectures compared, the closest class pairs in late features,
    the late probe's confusion matrix, and which module each depth was read from."""

    arch: str
    classes: list[str] = dataclasses.field(default_factory=list)
    confusion: list[list[int]] = dataclasses.field(default_factory=list)
    samples: int = 0
    stages: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    closest_pairs: list[Any] = dataclasses.field(default_factory=list)
    compare_arch: str | None = None


def discuss(results: RunResults) -> list[str]:
    m, data = results.metrics, results.read(Data)
    depths = [d for d in DEPTHS]
    probe = [m.value("probe_acc", arch=data.arch, depth=d) for d in depths]
    if random_weights(results.sources):
        reading = ("random weights: what each depth separates here comes from the input and the architecture, not "
                   "from anything learnt, so these numbers say nothing about what trained layers do.")
    elif probe[-1] > probe[0]:
        reading = "later layers separate the classes better."
    else:
        reading = "here the later layers do not separate the classes better than the early ones."
    text = ["Linear-probe accuracy by depth: " + ", ".join(f"{d} {p:.3f}" for d, p in zip(depths, probe)) + "; "
            + reading]
    text.append(f"CKA between early and late features is {m.value('cka', depth_a='early', depth_b='late'):.2f} (1: "
                "the same representation up to rotation and scale); middle-late "
                f"{m.value('cka', depth_a='middle', depth_b='late'):.2f}.")
    better = {d: "UMAP" if m.value("knn_acc_2d", method="umap", depth=d) > m.value("knn_acc_2d", method="tsne", depth=d)
              else "t-SNE" for d in depths}
    text.append("In 2-D, k-NN accuracy is higher for " + ", ".join(f"{better[d]} at {d}" for d in depths) + ".")
    pairs = data.closest_pairs
    if pairs:
        text.append("Most similar class pairs in late features: "
                    + ", ".join(f"{a}/{b} ({s:.2f})" for a, b, s in pairs[:3]) + ".")
    if data.compare_arch:
        a = m.value("probe_acc", arch=data.arch, depth="late")
        b = m.value("probe_acc", arch=data.compare_arch, depth="late")
        text.append(f"Late-feature probe: {data.arch} {a:.3f} vs {data.compare_arch} {b:.3f}.")
    return text



def readme_row(m: Metrics, data: Data) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    probe = {d: fixed(m.value("probe_acc", arch=data.arch, depth=d)) for d in ("early", "middle", "late")}
    return (f"linear probe {probe['early']} (early) / {probe['middle']} (middle) / {probe['late']} (late); "
            f"CKA early-late {fixed(m.value('cka', depth_a='early', depth_b='late'), 2)}")


EXPERIMENT = Experiment(data=Data, name="resnet.features",
                        summary="ResNet feature hierarchy: k-NN/probe/silhouette per depth, CKA, t-SNE vs UMAP",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row)
