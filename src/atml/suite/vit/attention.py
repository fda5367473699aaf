"""``vit.attention``: CLS attention maps, attention rollout and how the heads specialise.

The attention probabilities come from :meth:`atml.models.vit.ViT.attention`, which switches
the model to its unfused path and records each layer's softmax with hooks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from atml import figures, views
from atml.analysis import attention as att
from atml.context import RunContext
from atml.data import factory
from atml.errors import Key, UsageError
from atml.models import vit
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite.vit import common
from atml.suite.vit.config import ATTENTION_PRESETS as PRESETS
from atml.suite.vit.config import AttentionConfig


def run(cfg: AttentionConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    notes = common.source_notes(cfg, ctx)
    batch = attention_batch(model, cfg.batch_size, ctx.device)  # images per forward: also per preprocessing
    shown, stats_batches = _images(cfg, ctx, model, batch, notes)
    seen = attention_pass(model, (common.as_batch(dict(part), model, ctx.device)
                                  for part in _chunks(list(shown.items()), batch)), keep_maps=True)
    stats_pass = attention_pass(model, stats_batches(), keep_maps=False)
    stats = stats_pass.stats()
    last, flow = seen.last_cls, seen.rollout  # (B, H, N), (B, N)
    out = Results(notes=notes)
    out.add_figures(ctx.save_figure(overlay_figure(shown, model, last.mean(1), flow), "attention_maps"))
    out.add_figures(ctx.save_figure(heads_figure(next(iter(shown.values())), model, last[0]), "attention_heads"))
    out.add_figures(ctx.save_figure(stats_figure(stats, model), "head_statistics"))
    ctx.step(f"attention of {len(shown)} shown image(s), every layer, for the interactive view")
    view = attention_view(model, shown, ctx.device, cfg.arch)
    out.views += ctx.save_view(view, "attention")
    for name, value in (("images", len(shown)), ("stats_images", stats_pass.images), ("layers", stats_pass.layers),
                        ("heads", stats_pass.heads), ("grid", model.grid)):
        out.add(name, value)
    out.add("max_entropy_nats", math.log(model.grid ** 2), "nats")
    units = {"entropy": "nats", "distance_px": "px", "similarity": ""}
    for name, unit in units.items():
        for layer, index in (("last", -1), ("first", 0)):
            out.add(f"mean_{name}", float(stats[name][index].mean()), unit, key=f"{layer}_layer_mean_{name}",
                    layer=layer)
    out.add("cls_self_attention", seen.cls_self, key="last_layer_cls_self_attention", layer="last")
    out.tables += _tables(stats, stats_pass.images, stats_pass.layers, model.grid)
    notes.append("Attention probabilities recorded from the model's unfused attention path (hooks removed "
                 "afterwards); maps are the last layer's CLS row over the patches, renormalised, and the rollout "
                 "of Abnar and Zuidema (2020) through all layers, overlaid in red: a patch is transparent at or below "
                 f"the uniform share (1/{model.grid ** 2}) and fully red at {OVERLAY_FULL:g}x it, on a log scale, "
                 "so a near-uniform map looks near-uniform. Layers and heads are numbered from 1. Statistics are "
                 "accumulated "
                 f"layer by layer as the model computes them, {batch} image(s) at a time, so memory holds one "
                 "layer's attention of one batch.")
    notes.append(f"Interactive view: {view_size(view, stats_pass.layers)}.")
    return out


def _images(cfg: AttentionConfig, ctx: RunContext, model: vit.ViT, batch: int,
            notes: list[str]) -> tuple[dict[str, torch.Tensor], Callable[[], Iterator[torch.Tensor]]]:
    """The images whose maps are drawn, and the batches (normalised) the head statistics average over: the user's
    images (both), the first ``count`` of scikit-image's photos for an ImageNet model (both), else held-out images
    of the dataset (``count`` drawn, ``stats_images`` averaged over)."""
    if cfg.images:
        shown = common.user_images(cfg, model, notes)
        return shown, lambda: (common.as_batch(dict(part), model, ctx.device)
                               for part in _chunks(list(shown.items()), batch))
    if len(model.classes) == 1000 and not factory.describe(cfg.data).files:  # an ImageNet model: photos
        photos = dict(list(common.sample_photos(cfg, model, notes).items())[:cfg.count])
        return photos, lambda: iter(common.as_batch(photos, model, ctx.device).split(batch))
    data = common.load_labelled(cfg, ctx, model)
    stats_images = data.val.subset(cfg.stats_images, seed=cfg.seed).images
    shown = dict(list(common.split_images(data.val, cfg.count).items())[:cfg.count])
    return shown, lambda: (model.preprocess(b.to(ctx.device)) for b in stats_images.split(batch))


def _tables(stats: dict[str, Any], images: int, layers: int, grid: int) -> list[Table]:
    """The last layer's heads, one row each, and every layer's means over its heads."""
    rows = []
    for h in range(stats["entropy"].shape[1]):
        peak = int(stats["peak"][-1][h])
        rows.append([h + 1, float(stats["entropy"][-1][h]), float(stats["distance_px"][-1][h]),
                     f"({peak // grid}, {peak % grid})", float(stats["peak_share"][-1][h])])
    return [Table(f"Last-layer heads (CLS-to-patch attention, {images} images; "
                  f"uniform entropy = {math.log(grid ** 2):.2f} nats)",
                  ["head", "entropy (nats)", "mean distance (px)", "peak patch (row, col)", "images peaking there"],
                  rows),
            Table("Per layer: mean over heads", ["layer", "entropy (nats)", "mean distance (px)", "head-head cosine"],
                  [[i + 1, float(stats["entropy"][i].mean()), float(stats["distance_px"][i].mean()),
                    float(stats["similarity"][i])] for i in range(layers)])]


T = TypeVar("T")


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


ATTENTION_BUDGET = 1 << 30
"""Bytes one batch's attention may take (one layer's maps, about three copies while the layer computes them)."""


def attention_batch(model: vit.ViT, batch_size: int, device: torch.device) -> int:
    """Images per forward so that one layer's attention fits :data:`ATTENTION_BUDGET`; refuses what cannot fit."""
    from atml import runtime

    tokens = model.num_prefix_tokens + model.grid ** 2
    heads = _heads(model)
    per_image = 4 * heads * tokens * tokens * 4  # float32 maps: ~3 live copies in the layer, 1 for the rollout
    available = runtime.available_memory(device)
    if per_image > available:
        raise UsageError(f"one image's attention at {model.arch.image_size}px ({tokens:,} tokens, {heads} heads) needs "
                         f"about {per_image / 1e9:.1f} GB but {available / 1e9:.1f} GB is available on {device}; pass "
                         "a smaller ", Key("input_size"))
    return max(1, min(batch_size, ATTENTION_BUDGET // per_image, available // (2 * per_image)))


def _heads(model: vit.ViT) -> int:
    module = model.attention_modules()[0]
    return int(getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
               or module.attention.num_attention_heads)


@dataclasses.dataclass
class AttentionPass:
    """What one pass over the images leaves: per-layer sums for the statistics, and (optionally) the maps drawn."""

    prefix: int
    grid: int
    patch: int
    images: int = 0
    layers: int = 0
    heads: int = 0
    entropy: list[torch.Tensor] = dataclasses.field(default_factory=list)
    distance: list[torch.Tensor] = dataclasses.field(default_factory=list)
    similarity: list[torch.Tensor] = dataclasses.field(default_factory=list)
    peaks: list[list[torch.Tensor]] = dataclasses.field(default_factory=list)
    cls_maps: list[torch.Tensor] = dataclasses.field(default_factory=list)
    rollouts: list[torch.Tensor] = dataclasses.field(default_factory=list)
    cls_self_sum: torch.Tensor | None = None
    """Sums stay on the model's device: nothing waits for a copy inside the forward."""

    def add_layer(self, index: int, attn: torch.Tensor) -> None:
        """One layer's attention ``(B, H, T, T)`` of the current batch, summed into the statistics."""
        b = attn.shape[0]
        cls = att.cls_to_patches(attn, self.prefix)  # (B, H, N)
        sums = (att.entropy(cls).sum(0), att.mean_distance(attn, self.grid, self.patch, self.prefix) * b,
                att.head_similarity(cls).sum())
        if index == len(self.entropy):
            self.entropy.append(torch.zeros_like(sums[0]))
            self.distance.append(torch.zeros_like(sums[1]))
            self.similarity.append(torch.zeros_like(sums[2]))
            self.peaks.append([])
        self.entropy[index] += sums[0]
        self.distance[index] += sums[1]
        self.similarity[index] += sums[2]
        self.peaks[index].append(cls.argmax(-1))  # (B, H)

    def stats(self) -> dict[str, Any]:
        """Per layer and head: entropy, mean distance, peak patch; per layer: head-head similarity (image means)."""
        n = max(self.images, 1)
        peaks = [torch.cat(p).cpu() for p in self.peaks]
        modes = [p.mode(0).values for p in peaks]
        return {"entropy": torch.stack(self.entropy).cpu() / n, "distance_px": torch.stack(self.distance).cpu() / n,
                "similarity": torch.stack(self.similarity).cpu() / n, "peak": torch.stack(modes),
                "peak_share": torch.stack([(p == m).float().mean(0) for p, m in zip(peaks, modes)])}

    @property
    def last_cls(self) -> torch.Tensor:
        return torch.cat(self.cls_maps).cpu()

    @property
    def rollout(self) -> torch.Tensor:
        return torch.cat(self.rollouts).cpu()

    @property
    def cls_self(self) -> float:
        return float(self.cls_self_sum) / max(self.images * self.heads, 1) if self.cls_self_sum is not None else 0.0


@torch.inference_mode()
def attention_pass(model: vit.ViT, batches: Any, *, keep_maps: bool) -> AttentionPass:
    """Run ``batches`` (normalised images) through ``model``, consuming each layer's attention as it is computed."""
    result = AttentionPass(model.num_prefix_tokens, model.grid, model.arch.patch_size)
    layers = len(model.attention_modules())
    for x in batches:
        state: dict[str, Any] = {"layer": 0, "flow": None}

        def consume(attn: torch.Tensor, state: dict[str, Any] = state) -> None:  # this batch's state
            attn = attn.float()
            index = state["layer"]
            result.add_layer(index, attn)
            if keep_maps:  # the rollout is drawn for the shown images only: the statistics pass skips its matmuls
                state["flow"] = att.rollout_step(attn, state["flow"])
            if index == layers - 1:
                total = attn[:, :, 0, 0].sum()
                result.cls_self_sum = total if result.cls_self_sum is None else result.cls_self_sum + total
                if keep_maps:
                    result.cls_maps.append(att.cls_to_patches(attn, result.prefix))
            state["layer"] += 1

        with model.attention(consume):
            model(x)
        if keep_maps:
            result.rollouts.append(att.rollout_flow(state["flow"], result.prefix))
        result.images += x.shape[0]
        result.layers, result.heads = state["layer"], len(result.entropy[0]) if result.entropy else 0
    return result


def attention_view(model: vit.ViT, shown: dict[str, torch.Tensor], device: torch.device,
                   arch: str) -> views.Attention:
    """Every row of every stored layer's attention over the patches for each shown image (one forward each; layers
    and heads kept as :func:`atml.views.attention_plan` allows), and the rollout through all layers, every row."""
    layers, prefix = len(model.attention_modules()), model.num_prefix_tokens
    plan: tuple[list[int], bool] | None = None
    images, heads = [], 0
    for name, img in shown.items():
        kept: list[np.ndarray] = []
        state: dict[str, Any] = {"layer": 0, "flow": None}

        def consume(attn: torch.Tensor, state: dict[str, Any] = state, kept: list[np.ndarray] = kept) -> None:
            nonlocal plan, heads
            attn = attn.float()
            heads, tokens = attn.shape[1], attn.shape[-1]
            plan = plan or views.attention_plan(layers, heads, tokens, tokens - prefix)
            if state["layer"] in plan[0]:
                rows = attn[0, :, :, prefix:]  # (heads, tokens, patches): every query over the patch keys
                kept.append((rows if plan[1] else rows.mean(0, keepdim=True)).cpu().numpy())
            state["flow"] = att.rollout_step(attn, state["flow"])
            state["layer"] += 1

        with torch.inference_mode(), model.attention(consume):
            model(common.as_batch({name: img}, model, device))
        flow = state["flow"][0, :, prefix:]
        images.append(views.AttentionImage(name, _crop(img, model), np.stack(kept),
                                           (flow / flow.sum(-1, keepdim=True)).cpu().numpy()))
    assert plan is not None
    return views.Attention(f"{arch}: attention of {len(images)} image(s), click a patch", model.grid, prefix,
                           plan[0], heads, plan[1], images, OVERLAY_FULL)


def view_size(view: views.Attention, layers: int) -> str:
    """What the interactive view stores, and why: for the notes."""
    image = view.images[0].maps
    what = ("every head" if view.per_head else
            f"the mean of the {view.heads} heads (per head would pass {views.ATTENTION_BUDGET / 2 ** 20:g} MiB per "
            "image)")
    kept = (f"all {layers} layers" if len(view.layers) == layers
            else f"layers {', '.join(str(layer + 1) for layer in view.layers)} of {layers}")
    return (f"{len(view.images)} image(s) x {kept} x {what} x {image.shape[-2]} query tokens x {image.shape[-1]} "
            f"patches, uint8 scaled per row ({image.size / 2 ** 20:.2f} MiB per image), plus the rollout through all "
            "layers for every query token")


OVERLAY_FULL = 16.0
"""An overlay is fully red where a patch gets this many times the uniform share (1 / patches); transparent at or
below the uniform share, on a log scale between: a near-uniform map looks near-uniform, not full contrast."""


def _upsample(grid_map: torch.Tensor, grid: int, size: tuple[int, int]) -> np.ndarray:
    """Opacity per pixel: the patch's attention relative to uniform, 0 at or below it, 1 at :data:`OVERLAY_FULL`x."""
    m = grid_map.reshape(1, 1, grid, grid).float() * grid * grid  # x uniform
    m = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]
    return (m.clamp_min(1.0).log() / math.log(OVERLAY_FULL)).clamp(0, 1).numpy()


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
    result: torch.Tensor = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return result


def uniform_distance(model: vit.ViT) -> float:
    """The mean attention distance (px) of uniform patch-to-patch attention: the far end of the distance scale."""
    uniform = torch.full((1, 1, model.grid ** 2, model.grid ** 2), 1.0 / model.grid ** 2)
    return float(att.mean_distance(uniform, model.grid, model.arch.patch_size, prefix=0)[0])


@figures.styled
def overlay_figure(images: dict[str, torch.Tensor], model: vit.ViT, last: torch.Tensor, flow: torch.Tensor) -> Any:
    n = len(images)
    fig, axes = figures.figure(3, n, width=2.0, height=2.0 * n)
    for i, (name, img) in enumerate(images.items()):
        shown = _crop(img, model)
        size = (shown.shape[-2], shown.shape[-1])
        axes[i][0].imshow(shown.permute(1, 2, 0).numpy())
        axes[i][0].set_title(name[:30])
        axes[i][0].axis("off")
        _overlay(axes[i][1], shown, _upsample(last[i], model.grid, size))
        axes[i][1].set_title("last layer, mean of heads")
        _overlay(axes[i][2], shown, _upsample(flow[i], model.grid, size))
        axes[i][2].set_title("rollout, all layers")
    fig.tight_layout()
    return fig


@figures.styled
def heads_figure(img: torch.Tensor, model: vit.ViT, per_head: torch.Tensor) -> Any:
    heads = per_head.shape[0]
    cols = min(heads, 6)
    rows = math.ceil(heads / cols)
    fig, axes = figures.figure(cols, rows, width=2.0, height=1.3 * rows + 0.3)
    shown = _crop(img, model)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h < heads:
            _overlay(ax, shown, _upsample(per_head[h], model.grid, (shown.shape[-2], shown.shape[-1])))
            ax.set_title(f"head {h + 1}, H={float(att.entropy(per_head[h])):.2f}")
        else:
            ax.axis("off")
    fig.suptitle(f"last layer, CLS attention per head (H: entropy in nats; red: share over uniform, full at "
                 f"{OVERLAY_FULL:g}x)")
    fig.tight_layout()
    return fig


@figures.styled
def stats_figure(stats: dict[str, Any], model: vit.ViT) -> Any:
    """Per layer and head, on absolute scales: entropy from 0 to uniform (log N), distance from 0 to the distance of
    uniform attention, so sub-pixel differences do not show as contrast. Layers and heads count from 1."""
    fig, axes = figures.figure(3, width=2.0, height=2.2)
    layers, heads = stats["entropy"].shape
    scales = {"entropy": (0.0, math.log(model.grid ** 2), "CLS entropy (nats)\n0 to uniform"),
              "distance_px": (0.0, max(uniform_distance(model), float(stats["distance_px"].max())),
                              "mean attention distance (px)\n0 to uniform attention's")}
    for ax, key in ((axes[0][0], "entropy"), (axes[0][1], "distance_px")):
        low, high, title = scales[key]
        image = ax.imshow(stats[key].numpy(), aspect="auto", cmap="viridis", vmin=low, vmax=high,
                          extent=(0.5, heads + 0.5, layers + 0.5, 0.5))
        ax.set_xticks(range(1, heads + 1))
        ax.set_yticks(range(1, layers + 1))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(title)
        ax.grid(False)
        fig.colorbar(image, ax=ax, fraction=0.05)
    ax = axes[0][2]
    ax.plot(range(1, len(stats["similarity"]) + 1), stats["similarity"].numpy(), "o-", clip_on=False)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean head-head cosine")
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    return fig


def discuss(results: RunResults) -> list[str]:
    m = results.metrics
    if m.get("mean_entropy", layer="last") is None:
        return []
    last = {n: m.value(f"mean_{n}", layer="last") for n in ("entropy", "distance_px", "similarity")}
    first = {n: m.value(f"mean_{n}", layer="first") for n in ("entropy", "distance_px", "similarity")}
    grid = int(m.value("grid"))
    out = [f"Last-layer CLS attention has a mean entropy of {last['entropy']:.2f} nats against "
           f"{m.value('max_entropy_nats'):.2f} for a uniform map over {grid}x{grid} patches "
           f"(first layer: {first['entropy']:.2f})"
           + ("; the last layer is more focused than the first." if last["entropy"] < first["entropy"]
              else "; the last layer is not more focused than the first.")]
    out.append(f"Mean attention distance grows from {first['distance_px']:.1f} px in the first layer "
               f"to {last['distance_px']:.1f} px in the last"
               if last["distance_px"] > first["distance_px"] else
               f"Mean attention distance is {first['distance_px']:.1f} px in the first layer and "
               f"{last['distance_px']:.1f} px in the last")
    out[-1] += (f"; heads agree with each other at cosine {last['similarity']:.2f} in the last layer "
                f"({first['similarity']:.2f} in the first).")
    return out


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""

    def v(name: str, layer: str) -> str:
        return fixed(m.value(name, layer=layer), 2)

    return (f"last-layer CLS attention entropy {v('mean_entropy', 'last')} nats (uniform: "
            f"{fixed(m.value('max_entropy_nats'), 2)}) vs {v('mean_entropy', 'first')} in the first layer; head-head "
            f"cosine {v('mean_similarity', 'last')} (last) vs {v('mean_similarity', 'first')} (first)")



REFERENCES: tuple[Reference, ...] = (
    Reference("vit.attention", "mean attention distance grows with depth; some early heads attend globally",
              None, "Dosovitskiy et al. 2021, Fig. 7", "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(name="vit.attention",
                        summary="CLS attention maps, attention rollout and head specialisation",
                        config_cls=AttentionConfig, presets=PRESETS, run=run, discuss=discuss, readme_row=readme_row,
                        references=REFERENCES)
