"""``compare.saliency``: where each model looks, and whether its saliency maps say so faithfully.

On the same held-out images, for CNNs and ViTs: Grad-CAM, Grad-CAM++ and Score-CAM through the ``grad-cam``
package (pytorch-grad-cam; a ViT's last block read through its reshape transform, class and register tokens
left out), the class token's last-layer attention and attention rollout for ViTs (:mod:`atml.analysis.attention`),
and a random map as the baseline every method must beat. Each map explains the class the model predicts on the
intact image. Faithfulness in numbers (:mod:`atml.analysis.saliency`): deletion and insertion areas (Petsiuk et
al. 2018) over a grid of patches filled with the mean pixel, and the model randomisation sanity check (Adebayo
et al. 2018): the Spearman rank correlation between a method's maps for the trained model and for the same model
with its top layers re-initialised (a map that does not change is not explaining the model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from atml import figures, views
from atml.analysis import attention as att
from atml.analysis import saliency as sal
from atml.context import RunContext
from atml.data import digits
from atml.data.images import read_images
from atml.errors import UsageError
from atml.models import vit
from atml.provenance import DataSource
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite import datasets
from atml.suite.compare import common
from atml.suite.compare.config import CAMS, METHODS, VIT_ONLY
from atml.suite.compare.config import SALIENCY_PRESETS as PRESETS
from atml.suite.compare.config import SaliencyConfig as Config


@dataclasses.dataclass
class Data:
    """compare.saliency's own results data: the models and the methods each was scored with."""

    models: list[str]
    methods: dict[str, list[str]]


class Explained(nn.Module):
    """Normalised images -> the model's own class logits: a CNN's features through the head its weights came
    with (random weights: its new, random head), or a ViT's classifier (what the maps explain)."""

    def __init__(self, model: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.model
        if isinstance(self.model, vit.ViT) or self.head is None:
            result: torch.Tensor = net(x)
        else:
            result = self.head(net.forward_features(x))
        return result


def target_layer(model: nn.Module) -> nn.Module:
    """Grad-CAM's layer: a CNN's last stage; a ViT's last block's first norm (its tokens before attention)."""
    net: Any = model
    if isinstance(model, vit.TimmViT):
        layer: nn.Module = net.model.blocks[-1].norm1
    elif isinstance(model, vit.HFViT):
        layer = net.model.vit.layers[-1].layernorm_before
    else:
        layer = net.get_submodule(net.stage_paths[-1])
    return layer


def reshape_for(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A ViT's tokens ``(B, T, D)`` as a ``(B, D, g, g)`` map for the CAM methods (prefix tokens left out)."""
    if not isinstance(model, vit.ViT):
        return None
    prefix, grid = model.num_prefix_tokens, model.grid

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, prefix:].reshape(len(tokens), grid, grid, -1).permute(0, 3, 1, 2)
    return reshape


def cam_maps(method: str, explained: Explained, layer: nn.Module, reshape: Any, x: torch.Tensor,
             target: torch.Tensor, scorecam_batch: int,
             advance: Callable[[int], object] = lambda _n: None) -> torch.Tensor:
    """``(B, H, W)`` maps of one grad-cam method for the target classes, in [0, 1].

    Score-CAM gets one image at a time: the package multiplies its whole input by every channel's mask at once
    (images x channels x 3 x H x W floats: 39 GB for 32 images through ResNet-152 at 224 px), and each image
    costs a forward per channel anyway, so the extra forwards cost nothing measurable. ``advance(n)`` is called as
    each step's ``n`` images are done (a progress bar)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}[method]
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    step = 1 if method == "scorecam" else len(x)
    with cls(model=explained, target_layers=[layer], reshape_transform=reshape) as cam, quiet:  # its tqdm bar
        if method == "scorecam":
            cam.batch_size = scorecam_batch
        maps = []
        for i in range(0, len(x), step):
            maps.append(cam(input_tensor=x[i:i + step],
                            targets=[ClassifierOutputTarget(int(t)) for t in target[i:i + step]]))
            advance(len(maps[-1]))
    return torch.from_numpy(np.concatenate(maps).astype(np.float32, copy=False))


def attention_maps(method: str, model: vit.ViT, x: torch.Tensor) -> torch.Tensor:
    """The CLS token's last-layer attention (mean of heads) or attention rollout, upsampled to the input."""
    with torch.no_grad(), model.attention() as maps:
        model(x)
    flow = (att.cls_to_patches(maps[-1], model.num_prefix_tokens).mean(1) if method == "cls_attention"
            else att.rollout(maps, model.num_prefix_tokens))
    grid = flow.reshape(len(x), 1, model.grid, model.grid).float()
    return torch.nn.functional.interpolate(grid, size=x.shape[-2:], mode="nearest")[:, 0].cpu()


def maps_for(method: str, explained: Explained, x: torch.Tensor, target: torch.Tensor, cfg: Config,
             generator: torch.Generator, advance: Callable[[int], object] = lambda _n: None) -> torch.Tensor:
    """One batch's maps of ``method`` for ``explained`` (the trained model, or its randomised copy)."""
    model = explained.model
    if method in CAMS:
        return cam_maps(method, explained, target_layer(model), reshape_for(model), x, target, cfg.scorecam_batch,
                        advance)
    maps = (attention_maps(method, model, x) if method in VIT_ONLY and isinstance(model, vit.ViT)
            else torch.rand(len(x), *x.shape[-2:], generator=generator))
    advance(len(x))
    return maps


SCORECAM_SHARE = 0.25
"""With ``scorecam_batch=0`` on a GPU, Score-CAM's masked forwards take up to this share of the free memory."""
CPU_SCORECAM_BATCH = 64


@dataclasses.dataclass(frozen=True)
class ScoreCamCost:
    """What Score-CAM costs per image on this device, measured on copies of the first image."""

    channels: int
    """Masked forwards per image: the target layer's channels."""
    seconds: float
    """One image's forward."""
    forward_bytes: int | None
    """Device memory one more image adds to a forward (None off CUDA)."""
    free_bytes: int | None
    """The device's free memory before the masked forwards (None off CUDA)."""


def scorecam_batch(configured: int, cost: ScoreCamCost, image: torch.Tensor) -> int:
    """Masked copies per forward: ``configured``, or (0) as many as :data:`SCORECAM_SHARE` of the free memory holds
    once the package's per-image tensors are made (every channel's upsampled mask and masked copy of ``image``: channels
    x (1 + 3) x H x W floats), at most one per channel; :data:`CPU_SCORECAM_BATCH` off CUDA."""
    if configured:
        return configured
    if cost.forward_bytes is None or cost.free_bytes is None:
        return CPU_SCORECAM_BATCH
    masks = cost.channels * (1 + image.shape[0]) * image[0].numel() * 4
    per_copy = cost.forward_bytes + image.numel() * 4
    room = SCORECAM_SHARE * cost.free_bytes - masks
    return int(max(1, min(cost.channels, room // max(per_copy, 1))))


def scorecam_estimate(explained: Explained, x: torch.Tensor, batch: int) -> ScoreCamCost:
    """Score-CAM's masked forwards per image (the target layer's channels), the seconds one image's forward takes
    here, timed on ``batch`` copies of the first image after a warm-up, and on CUDA the memory a copy adds."""
    channels: list[int] = []
    reshape = reshape_for(explained.model)

    def seen(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        channels.append((reshape(output) if reshape else output).shape[1])
    handle = target_layer(explained.model).register_forward_hook(seen)
    try:
        _probabilities(explained, x[:1])
    finally:
        handle.remove()
    copies = x[:1].expand(batch, *x.shape[1:])
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
    _probabilities(explained, copies)
    forward_bytes = (torch.cuda.max_memory_allocated(x.device) - before) // batch if cuda else None
    free_bytes = torch.cuda.mem_get_info(x.device)[0] if cuda else None
    start = time.perf_counter()
    _probabilities(explained, copies)
    if cuda:
        torch.cuda.synchronize(x.device)
    return ScoreCamCost(channels[0], (time.perf_counter() - start) / batch, forward_bytes, free_bytes)


def duration(seconds: float) -> str:
    """A rough time in words: "under a minute", "about 12 min", "about 1 h 20 min"."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


def methods_for(subject: common.Subject, chosen: tuple[str, ...] = ()) -> list[str]:
    """The methods run on ``subject``: those chosen (all by default) that its family takes, and the random
    baseline."""
    takes = list(METHODS) if isinstance(subject.model, vit.ViT) else [*CAMS, "random"]
    return [m for m in takes if not chosen or m in chosen or m == "random"]


def randomised(explained: Explained, seed: int) -> Explained:
    """A copy with its top layers re-initialised (Adebayo et al.'s cascading randomisation, top step): the head
    and the last stage of a CNN, the last block and the head of a ViT."""
    import copy

    clone = copy.deepcopy(explained)
    model: Any = clone.model
    if isinstance(model, vit.TimmViT):
        top = [model.model.blocks[-1], model.model.head]
    elif isinstance(model, vit.HFViT):
        top = [model.model.vit.layers[-1], model.model.classifier]
    else:
        top = [model.get_submodule(model.stage_paths[-1])] + ([clone.head] if clone.head is not None else [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for part in top:
            for module in part.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return clone


def run(cfg: Config, ctx: RunContext) -> Results:
    models = common.load_models(cfg, ctx, keep_head=True)
    pictures, source, notes = _pictures(cfg, ctx, models)
    out = Results(notes=common.source_notes(cfg, models, source) + notes + [
        f"{source}; each map explains the class the model predicts on the intact image. "
        f"Deletion/insertion: a {cfg.grid} x {cfg.grid} grid of patches, filled with the mean pixel of the images "
        "(vit.masking's fill), removed (deletion) or revealed (insertion) most salient first, one patch per "
        "step; the area under the predicted class's probability (deletion: lower is more faithful; insertion: "
        "higher). Sanity check: Spearman rank correlation of each method's maps for the trained model and for "
        "the same model with its top layers re-initialised (near 1: the map ignores what the model learnt)."])
    rows: list[list[Any]] = []
    curves_by: dict[str, dict[str, dict[str, Any]]] = {}
    methods_by: dict[str, list[str]] = {}
    entries: list[views.SaliencyEntry] = []
    generator = torch.Generator().manual_seed(cfg.seed)
    for subject in models:
        _check_explainable(subject)
        methods_by[subject.label] = methods_for(subject, cfg.methods)
        ctx.step(f"{subject.label}: {', '.join(methods_by[subject.label])} on {len(pictures)} images")
        curves_by[subject.label] = per_method = {}
        for method, scored in _explain(subject, methods_by[subject.label], pictures, cfg, ctx, generator):
            per_method[method] = scored.curves
            out.add("deletion_auc", scored.deletion_auc, model=subject.label, method=method)
            out.add("insertion_auc", scored.insertion_auc, model=subject.label, method=method)
            if scored.sanity is not None:
                out.add("sanity_rank_corr", scored.sanity, model=subject.label, method=method)
            if scored.note:
                out.notes.append(scored.note)
            rows.append([subject.label, method, scored.deletion_auc, scored.insertion_auc, scored.sanity])
            if cfg.shown:
                entries.append(view_entry(subject.label, method, scored, cfg.shown))
        if cfg.shown:
            out.add_figures(ctx.save_figure(grid_figure(subject.label, pictures[:cfg.shown], per_method,
                                                        methods_by[subject.label]), f"maps_{_slug(subject.label)}"))
    out.tables.append(Table(f"Faithfulness of each method on {source} (deletion: lower is "
                            "better; insertion: higher; sanity: lower means the map depends on the learnt top "
                            "layers)", ["model", "method", "deletion AUC", "insertion AUC", "sanity rank corr"],
                            rows))
    out.add_figures(ctx.save_figure(curves_figure(curves_by, cfg.grid), "deletion_insertion"))
    if entries:
        shown = len(entries[0].deletion)
        out.views += ctx.save_view(views.Saliency(f"Saliency maps of {len(models)} model(s) over {shown} images: pick "
                                                  "a method and an image", pictures[:cfg.shown], entries), "saliency")
    out.keep(Data([m.label for m in models], methods_by))
    return out


MAP_PX = 64
"""Maps in the interactive view are stored at most this many pixels on a side (area-averaged; the page draws them
smoothly over the image)."""


def view_entry(label: str, method: str, scored: Scored, shown: int) -> views.SaliencyEntry:
    """One method's maps of the first ``shown`` images, with their AUCs, for :class:`atml.views.Saliency`."""
    maps = scored.curves["maps"][:shown].float()[:, None]
    if max(maps.shape[-2:]) > MAP_PX:
        maps = torch.nn.functional.adaptive_avg_pool2d(maps, (MAP_PX, MAP_PX))
    deletion, insertion = scored.per_image
    return views.SaliencyEntry(label, method, maps[:, 0].numpy(), deletion[:shown], insertion[:shown],
                               scored.deletion_auc, scored.insertion_auc)


def _pictures(cfg: Config, ctx: RunContext, models: list[common.Subject]) -> tuple[list[torch.Tensor], str,
                                                                                   list[str]]:
    """The images the maps explain (the user's files, or held-out images), what they are, and notes on them."""
    if not cfg.images:
        data = common.load_data(cfg, ctx, models, digit_classes=digits.PRETRAIN_CLASSES)  # the classes they know
        split = data.val.subset(cfg.limit, seed=cfg.seed)
        return list(split.images), f"{len(split)} held-out images of {data.name}", []
    skipped: list[str] = []
    plan = datasets.decode_plan(cfg.image_size, [m.built.preprocessing for m in models])
    found = read_images(cfg.images, skip_bad=cfg.skip_bad_images, skipped=skipped, square=plan)
    notes = [f"Your images: {plan.why}."]
    notes += [f"{len(skipped)} unreadable image(s) left out (skip_bad_images=true): {'; '.join(skipped)}"] \
        if skipped else []
    ctx.record_source("data", DataSource("your images", f"{len(found)} of your images", val=len(found),
                                         skipped=skipped, files=list(found), decode=plan.as_json()))
    return list(found.values()), f"{len(found)} of your images", notes


def _check_explainable(subject: common.Subject) -> None:
    """Refuse, in one line, a model with no class for the maps to explain."""
    head = subject.built.pretrained_head
    if not isinstance(subject.model, vit.ViT) and head is None and subject.built.info.pretrained:
        raise UsageError(f"{subject.label}: its weights ({subject.weights}) carry no classifier for the maps "
                         "to explain; use weights with their own head (imagenet, digits)")
    if isinstance(subject.model, vit.ViT) and not subject.model.has_head:
        raise UsageError(f"{subject.label} has no classification head (a self-supervised backbone): there is "
                         "no class for the maps to explain")


@dataclasses.dataclass
class Scored:
    """One method on one model: mean deletion and insertion curves with the first batch's maps, the mean AUCs, and
    the sanity rank correlation (None for the random baseline)."""

    curves: dict[str, Any]
    deletion_auc: float
    insertion_auc: float
    sanity: float | None
    per_image: tuple[list[float], list[float]] = ([], [])
    """Each image's deletion and insertion AUC, in order (the interactive view shows them)."""
    note: str | None = None
    """Why the sanity value is missing or covers fewer images than were scored."""


def _probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        result: torch.Tensor = model(x).float().softmax(-1)
        return result


def _explain(subject: common.Subject, methods: list[str], pictures: list[torch.Tensor], cfg: Config,
             ctx: RunContext, generator: torch.Generator) -> Iterator[tuple[str, Scored]]:
    """Each method's maps of ``subject`` on ``pictures``, scored against the class it predicts on the intact image."""
    explained = Explained(subject.model, subject.built.pretrained_head).to(ctx.device).eval()
    scrambled = randomised(explained, cfg.seed + 1).to(ctx.device).eval()
    x_all = prepare(subject, pictures, cfg.batch_size, ctx.device)
    fill = x_all.double().mean((0, 2, 3)).float().view(1, -1, 1, 1)
    predict = functools.partial(_probabilities, explained)
    target = torch.cat([predict(b).argmax(1) for b in x_all.split(cfg.batch_size)])
    if "scorecam" in methods:
        cost = scorecam_estimate(explained, x_all, min(cfg.scorecam_batch or 16, 16))
        cfg = dataclasses.replace(cfg, scorecam_batch=scorecam_batch(cfg.scorecam_batch, cost, x_all[0]))
        forwards = 2 * cost.channels * len(x_all)
        ctx.step(f"{subject.label}: scorecam runs one forward per channel of its target layer ({cost.channels}) for "
                 f"each image, for the trained and the randomised model: {forwards:,} image forwards in batches of "
                 f"{cfg.scorecam_batch}, {duration(forwards * cost.seconds)} on this device (methods=[...] without "
                 "scorecam leaves it out)")
    for method in methods:
        deletion: list[torch.Tensor] = []
        insertion: list[torch.Tensor] = []
        rho: list[np.ndarray] = []
        first: torch.Tensor | None = None
        bar = tqdm(total=len(x_all) * (1 if method == "random" else 2), desc=f"{subject.label} {method}", unit="img",
                   disable=not ctx.progress, leave=False, file=sys.stderr)
        for rows_x, rows_t in zip(x_all.split(cfg.batch_size), target.split(cfg.batch_size)):
            maps = maps_for(method, explained, rows_x, rows_t, cfg, generator, bar.update)
            d, i = sal.curves(predict, rows_x, sal.patch_scores(maps, cfg.grid), rows_t.to(ctx.device), cfg.grid,
                              fill)
            deletion.append(d)
            insertion.append(i)
            if method != "random":
                again = maps_for(method, scrambled, rows_x, rows_t, cfg, generator, bar.update)
                rho.append(sal.rank_correlation(maps, again))
            first = maps if first is None else first
        bar.close()
        d_curve, i_curve = torch.cat(deletion), torch.cat(insertion)
        sanity, note = sal.sanity_summary(rho, method, subject.label) if rho else (None, None)
        d_auc, i_auc = sal.auc(d_curve), sal.auc(i_curve)
        yield method, Scored({"deletion": d_curve.mean(0), "insertion": i_curve.mean(0), "maps": first},
                             float(d_auc.mean()), float(i_auc.mean()), sanity, (d_auc.tolist(), i_auc.tolist()),
                             note)


def prepare(subject: common.Subject, pictures: list[torch.Tensor], batch_size: int,
            device: torch.device) -> torch.Tensor:
    """uint8 images of any sizes -> the model's normalised inputs: same-sized neighbours in batches."""
    out, start = [], 0
    while start < len(pictures):
        end = start + 1
        while end < len(pictures) and end - start < batch_size and pictures[end].shape == pictures[start].shape:
            end += 1
        out.append(subject.preprocess(torch.stack(pictures[start:end]).to(device)))
        start = end
    return torch.cat(out)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


@figures.styled
def grid_figure(label: str, images: list[torch.Tensor], per_method: dict[str, dict[str, Any]],
                methods: list[str]) -> Any:
    """Each shown image (rows) and each method's map over it (columns)."""
    n = len(images)
    cell = figures.COLUMN_WIDTH_IN * 2 / (len(methods) + 1)  # square cells across a two-column width
    fig, axes = figures.figure(len(methods) + 1, n, width=2.0, height=cell * n + 0.45)
    for r in range(n):
        image = images[r].float() / 255
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        picture = image.permute(1, 2, 0).numpy()
        axes[r][0].imshow(picture)
        for c, method in enumerate(methods, start=1):
            saliency = per_method[method]["maps"][r]
            ax = axes[r][c]
            ax.imshow(np.asarray(torch.nn.functional.interpolate(image[None], size=saliency.shape, mode="bilinear",
                                                                 align_corners=False)[0].permute(1, 2, 0)))
            ax.imshow(saliency.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=float(saliency.max()) or 1)
        for c in range(len(methods) + 1):
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            axes[r][c].grid(False)
    for c, title in enumerate(["image", *methods]):
        axes[0][c].set_title(title, fontsize="x-small")
    fig.suptitle(label, fontsize="small")
    fig.tight_layout(pad=0.2)
    return fig


@figures.styled
def curves_figure(curves_by: dict[str, dict[str, dict[str, Any]]], grid: int) -> Any:
    """Mean deletion (solid) and insertion (dashed) curves per method, one panel per model."""
    fig, axes = figures.figure(len(curves_by), width=2.0 if len(curves_by) > 1 else 1.0, height=2.4, sharey=True)
    handles = {}
    for ax, (label, per_method) in zip(axes[0], curves_by.items()):
        for method, values in per_method.items():
            colour = figures.palette(METHODS.index(method))  # one colour per method in every panel
            fraction = np.linspace(0, 1, len(values["deletion"]))
            line, = ax.plot(fraction, values["deletion"].numpy(), "-", color=colour, label=method)
            ax.plot(fraction, values["insertion"].numpy(), "--", color=colour)
            handles[method] = line
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(f"fraction of the {grid}x{grid} patches")
    axes[0][0].set_ylabel("probability of the predicted class")
    from matplotlib.lines import Line2D

    style = [Line2D([], [], color="0.3", ls="-", label="deletion"), Line2D([], [], color="0.3", ls="--",
                                                                            label="insertion")]
    figures.legend_below(fig, [*handles.values(), *style], ncol=4)
    return fig


def discuss(results: RunResults) -> list[str]:
    m, data = results.metrics, results.read(Data)
    text = []
    for label in data.models:
        methods = [x for x in data.methods[label] if x != "random"]
        d = {x: m.value("deletion_auc", model=label, method=x) for x in data.methods[label]}
        i = {x: m.value("insertion_auc", model=label, method=x) for x in data.methods[label]}
        best_d = min(methods, key=lambda x: d[x])
        best_i = max(methods, key=lambda x: i[x])
        beat = [x for x in methods if d[x] < d["random"] and i[x] > i["random"]]
        text.append(f"{label}: the most faithful method by deletion is {best_d} ({d[best_d]:.3f} vs random "
                    f"{d['random']:.3f}); by insertion {best_i} ({i[best_i]:.3f} vs random {i['random']:.3f}); "
                    + (f"{', '.join(beat)} beat the random map on both." if beat else
                       "no method beats the random map on both."))
        sanity = {x: m.get("sanity_rank_corr", model=label, method=x) for x in methods}
        stable = [x for x, v in sanity.items() if v is not None and v > 0.8]
        if stable:
            text.append(f"{label}: the maps of {', '.join(stable)} barely change when the top layers are "
                        "re-initialised (rank correlation above 0.8): they do not depend on what the model learnt "
                        "there.")
    return text


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    parts = []
    for label in sorted({r.condition["model"] for r in m.find("deletion_auc")}):
        d = m.by("deletion_auc", "method", model=label)
        best = min((x for x in d if x != "random"), key=lambda x: d[x])
        parts.append(f"{label}: {best} {fixed(d[best])} vs random {fixed(d['random'])}")
    return "deletion AUC (lower is better), best method: " + "; ".join(parts)


REFERENCES: tuple[Reference, ...] = (
    Reference("compare.saliency", "Grad-CAM's maps change when a network's top layers are randomised (it passes "
              "the model randomisation test; guided backprop does not)", None, "Adebayo et al. 2018, Fig. 2",
              "recalled"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="compare.saliency",
                        summary="Grad-CAM, Grad-CAM++, Score-CAM (slow: a forward per channel per image), CLS "
                                "attention and rollout, scored by deletion, insertion and the randomisation sanity "
                                "check; methods=[...] picks them",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss, references=REFERENCES,
                        readme_row=readme_row)
