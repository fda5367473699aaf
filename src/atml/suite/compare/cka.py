"""``compare.cka``: linear CKA between every layer of one model and every layer of another (Raghu et al. 2021,
"Do Vision Transformers See Like Convolutional Neural Networks?"), and of each model with itself.

Both models see the same images, each at its own preprocessing. Layer outputs come from forward hooks
(:mod:`atml.models.layers`: a ResNet's residual blocks, a ViT's transformer blocks), pooled to one vector per
image (spatial positions or patch tokens averaged). CKA is the minibatch estimator of Nguyen, Raghu and
Kornblith (2021) (:mod:`atml.analysis.cka`): unbiased HSIC summed batch by batch, so memory holds running
sums, not features, whatever the number of images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from atml import benchmark as bench_lib
from atml import figures, runtime, views
from atml.analysis.cka import MinibatchCKA
from atml.context import RunContext
from atml.errors import UsageError
from atml.models import layers as layers_lib
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Bench, Metrics, Results, RunResults, Table, fixed
from atml.suite.compare import common
from atml.suite.compare.config import CKA_PRESETS as PRESETS
from atml.suite.compare.config import CkaConfig as Config


@dataclasses.dataclass
class Data:
    """compare.cka's own results data: the two models' layer names and the three CKA matrices (rows: the first
    model's layers of each pair), as nested lists (NaN for a layer with constant output)."""

    models: list[str]
    layers_a: list[str]
    layers_b: list[str]
    cross: list[list[float]]
    self_a: list[list[float]]
    self_b: list[list[float]]
    images: int = 0


def run(cfg: Config, ctx: RunContext) -> Results:
    models = common.load_models(cfg, ctx)
    data = common.load_data(cfg, ctx, models)
    split = data.val.subset(cfg.images, seed=cfg.seed) if cfg.images else data.val
    if len(split) < 4:
        raise UsageError(f"compare.cka needs at least 4 held-out images (the unbiased HSIC estimator's minimum); "
                         f"data={cfg.data} has {len(split)}")
    if len(split) < cfg.batch_size:  # a small folder: one batch of all its images
        cfg = dataclasses.replace(cfg, batch_size=len(split))
    usable = (len(split) // cfg.batch_size) * cfg.batch_size
    a, b = models
    names_a, names_b = list(layers_lib.comparable_layers(a.model)), list(layers_lib.comparable_layers(b.model))
    ctx.step(f"CKA of {len(names_a)} x {len(names_b)} layers on {usable} images, {usable // cfg.batch_size} batches")
    started = time.perf_counter()
    matrices = accumulate(models, split.images[:usable], cfg, ctx)
    seconds = time.perf_counter() - started
    cross, self_a, self_b = (m.value().numpy() for m in matrices)
    out = Results(notes=common.source_notes(cfg, models, data.name) + [
        f"Linear CKA, minibatch estimator with unbiased HSIC (Nguyen, Raghu, Kornblith 2021) over {usable} held-out "
        f"images in batches of {cfg.batch_size}; each layer's output pooled to one vector per image (feature maps "
        "averaged over positions, tokens over the patch tokens; Raghu et al. flatten them instead)."])
    out.add("images", usable)
    out.add("cka_time_s", seconds, "s")
    for layer, (_, value, depth) in zip(names_b, best_matches(cross)):
        out.add("best_cka", value, layer_b=layer)
        out.add("best_relative_depth", depth, layer_b=layer)
    for subject, grid in ((a, self_a), (b, self_b)):
        out.add("mean_offdiag_cka", mean_off_diagonal(grid), model=subject.label)
    out.add("mean_cross_cka", float(np.nanmean(cross)))
    out.keep(Data([a.label, b.label], names_a, names_b, cross.tolist(), self_a.tolist(), self_b.tolist(), usable))
    out.tables.append(best_match_table(a.label, b.label, names_a, names_b, cross))
    out.add_figures(ctx.save_figure(heatmaps(a.label, b.label, names_a, names_b, cross, self_a, self_b),
                                    "cka_heatmaps"))
    out.views += ctx.save_view(heatmap_view(a.label, b.label, names_a, names_b, cross, self_a, self_b), "cka")
    return out


def layer_batches(models: list[common.Subject], images: torch.Tensor, cfg: Config,
                  ctx: RunContext) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Both models' pooled layer outputs, one batch at a time, on the device (each list in forward order)."""
    a, b = models
    layers_a, layers_b = layers_lib.comparable_layers(a.model), layers_lib.comparable_layers(b.model)
    with torch.inference_mode(), layers_lib.recorded(a.model, layers_a) as out_a, \
            layers_lib.recorded(b.model, layers_b) as out_b:
        for batch in images.split(cfg.batch_size):
            x = batch.to(ctx.device, non_blocking=True)
            with runtime.autocast(ctx.device, cfg.amp):
                layers_lib.features(a.model, a.preprocess(x))
                layers_lib.features(b.model, b.preprocess(x))
            yield [out_a[n] for n in layers_a], [out_b[n] for n in layers_b]


def accumulate(models: list[common.Subject], images: torch.Tensor, cfg: Config,
               ctx: RunContext) -> tuple[MinibatchCKA, MinibatchCKA, MinibatchCKA]:
    """A x B, A x A and B x B CKA accumulated batch by batch (features stay on the device, batch by batch)."""
    sizes = [len(layers_lib.comparable_layers(m.model)) for m in models]
    cross, self_a, self_b = (MinibatchCKA(sizes[0], sizes[1]), MinibatchCKA(sizes[0], sizes[0]),
                             MinibatchCKA(sizes[1], sizes[1]))
    for fa, fb in layer_batches(models, images, cfg, ctx):
        cross.update(fa, fb)
        self_a.update(fa, fa)
        self_b.update(fb, fb)
    return cross, self_a, self_b


def bench(cfg: Config) -> Bench:
    """The minibatch estimator (running sums, batch by batch) vs what a notebook does: keep every layer's
    features of every image, then full-batch CKA. Same images, same layers; the result is the mean cross CKA."""
    with bench_lib.scratch_context(cfg) as ctx:
        models = common.load_models(cfg, ctx)
        data = common.load_data(cfg, ctx, models)
        split = data.val.subset(cfg.images, seed=cfg.seed) if cfg.images else data.val
        images = split.images[:(len(split) // cfg.batch_size) * cfg.batch_size]
        timings = {}
        started = time.perf_counter()
        everything = _naive(models, images, cfg, ctx)
        timings["naive (all features, full batch)"] = (time.perf_counter() - started, everything)
        started = time.perf_counter()
        cross = accumulate(models, images, cfg, ctx)[0].value()
        timings["atml (minibatch running sums)"] = (time.perf_counter() - started, float(np.nanmean(cross.numpy())))
        a = models[0]
        throughput = bench_lib.model_throughput(lambda b: layers_lib.features(a.model, a.preprocess(b)),
                                                images.to(ctx.device), ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"compare.cka {' vs '.join(m.label for m in models)}, {len(images)} images "
                               f"({data.name}), batch {cfg.batch_size}, device {ctx.device}; the naive path holds "
                               f"every layer's features of all {len(images)} images and an n x n Gram matrix per "
                               "layer, atml's holds one batch's", timings, throughput, "mean cross CKA")


def _naive(models: list[common.Subject], images: torch.Tensor, cfg: Config, ctx: RunContext) -> float:
    """Every layer's features of every image kept on the host, then CKA on the whole set (one "batch")."""
    kept_a: list[list[torch.Tensor]] = []
    kept_b: list[list[torch.Tensor]] = []
    for fa, fb in layer_batches(models, images, cfg, ctx):
        kept_a.append([f.cpu() for f in fa])
        kept_b.append([f.cpu() for f in fb])
    whole = MinibatchCKA(len(kept_a[0]), len(kept_b[0]))
    whole.update([torch.cat(layer) for layer in zip(*kept_a)], [torch.cat(layer) for layer in zip(*kept_b)])
    return float(np.nanmean(whole.value().numpy()))


def mean_off_diagonal(grid: np.ndarray) -> float:
    """How uniform a model is across depth: the mean CKA between different layers (1: every layer alike)."""
    n = len(grid)
    if n < 2:
        return float("nan")
    return float(np.nanmean(grid[~np.eye(n, dtype=bool)]))


def best_matches(cross: np.ndarray) -> list[tuple[int, float, float]]:
    """For each column (a layer of B): the row of A with the highest CKA, that CKA, and the row's relative depth."""
    out = []
    for column in cross.T:
        best = int(np.nanargmax(column)) if np.isfinite(column).any() else 0
        out.append((best, float(column[best]), best / max(len(cross) - 1, 1)))
    return out


def best_match_table(label_a: str, label_b: str, names_a: list[str], names_b: list[str],
                     cross: np.ndarray) -> Table:
    rows = [[layer, names_a[best], value, f"{depth:.2f}"]
            for layer, (best, value, depth) in zip(names_b, best_matches(cross))]
    return Table(f"For each layer of {label_b}: the most similar layer of {label_a} (linear CKA)",
                 [f"{label_b} layer", f"closest {label_a} layer", "CKA", "its relative depth"], rows)


def _ticks(ax: Any, names: list[str], axis: str) -> None:
    step = max(1, math.ceil(len(names) / 8))  # at most 8 labels: readable at a column's width
    positions = list(range(0, len(names), step))
    if axis == "x":
        ax.set_xticks(positions, labels=[names[i] for i in positions], rotation=90)
    else:
        ax.set_yticks(positions, labels=[names[i] for i in positions])


@figures.styled
def heatmaps(label_a: str, label_b: str, names_a: list[str], names_b: list[str], cross: np.ndarray,
             self_a: np.ndarray, self_b: np.ndarray) -> Any:
    """The three CKA matrices side by side, first layer at the bottom left, one colour scale below them.

    The first two panels share their rows (the first model's layers, labelled on the left); the third has
    the second model's layers as rows, labelled on its right."""
    fig, axes = figures.figure(3, width=2.0, height=3.0)
    panels = ((self_a, names_a, f"{label_a}\nvs itself", label_a), (cross, names_b, f"{label_a}\nvs {label_b}",
                                                                      label_b),
              (self_b, names_b, f"{label_b}\nvs itself", label_b))
    image = None
    for k, (ax, (grid, cols, title, col_label)) in enumerate(zip(axes[0], panels)):
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="magma", origin="lower", aspect="auto")
        ax.grid(False)
        _ticks(ax, cols, "x")
        ax.set_xlabel(f"{col_label} layer", fontsize="small")
        ax.set_title(title, fontsize="small")
        if k == 0:
            _ticks(ax, names_a, "y")
            ax.set_ylabel(f"{label_a} layer", fontsize="small")
        elif k == 1:
            ax.set_yticks([])  # the same rows as the first panel
        else:
            _ticks(ax, names_b, "y")
            ax.yaxis.tick_right()
            ax.yaxis.set_label_position("right")
            ax.set_ylabel(f"{label_b} layer", fontsize="small")
    fig.tight_layout(rect=(0, 0.2, 1, 1), w_pad=0.6)
    bar = fig.add_axes((0.3, 0.13, 0.4, 0.025))  # below the panels, its ticks and label inside the figure
    fig.colorbar(image, cax=bar, orientation="horizontal", label="linear CKA")
    return fig


def heatmap_view(label_a: str, label_b: str, names_a: list[str], names_b: list[str], cross: np.ndarray,
                 self_a: np.ndarray, self_b: np.ndarray) -> views.Heatmap:
    """The three matrices of :func:`heatmaps`, to hover: both layers' names and the value."""
    def panel(name: str, rows: list[str], cols: list[str], row_model: str, col_model: str,
              values: np.ndarray) -> views.HeatmapPanel:
        return views.HeatmapPanel(name, rows, cols, f"{row_model} layer", f"{col_model} layer", values)

    return views.Heatmap(f"Linear CKA between the layers of {label_a} and {label_b}",
                         [panel(f"{label_a} vs {label_b}", names_a, names_b, label_a, label_b, cross),
                          panel(f"{label_a} vs itself", names_a, names_a, label_a, label_a, self_a),
                          panel(f"{label_b} vs itself", names_b, names_b, label_b, label_b, self_b)],
                         value_name="linear CKA", cmap="magma", origin="lower")


def discuss(results: RunResults) -> list[str]:
    data, m = results.read(Data), results.metrics
    label_a, label_b = data.models
    cross = np.array(data.cross, dtype=float)
    text = []
    first, last = cross[:, 0], cross[:, -1]
    early = int(np.nanargmax(first)) / max(len(data.layers_a) - 1, 1)
    late = int(np.nanargmax(last)) / max(len(data.layers_a) - 1, 1)
    text.append(f"The first layer of {label_b} is closest to {label_a}'s layer at relative depth {early:.2f} "
                f"(CKA {np.nanmax(first):.2f}); its last layer to the one at depth {late:.2f} "
                f"(CKA {np.nanmax(last):.2f}).")
    ua, ub = m.value("mean_offdiag_cka", model=label_a), m.value("mean_offdiag_cka", model=label_b)
    more, less = (label_a, label_b) if ua > ub else (label_b, label_a)
    text.append(f"Mean CKA between different layers of the same model: {label_a} {ua:.2f}, {label_b} {ub:.2f}; "
                + (f"{more}'s layers are more alike across depth than {less}'s." if ua != ub else "equally alike."))
    return text


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    per_model = m.by("mean_offdiag_cka", "model")
    return ("mean CKA between different layers: " + ", ".join(f"{k} {fixed(v, 2)}" for k, v in per_model.items())
            + f"; mean cross-model CKA {fixed(m.value('mean_cross_cka'), 2)}")


REFERENCES: tuple[Reference, ...] = (
    Reference("compare.cka", "ViTs have more uniform representations across layers than ResNets (higher CKA "
              "between lower and higher layers)", None, "Raghu et al. 2021, Fig. 1", "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="compare.cka",
                        summary="Linear CKA between every layer of two models (and each with itself), minibatch HSIC",
                        config_cls=Config, presets=PRESETS, run=run, bench=bench, discuss=discuss,
                        references=REFERENCES, readme_row=readme_row)
