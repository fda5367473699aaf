"""``clip.zeroshot``: zero-shot accuracy on the whole test split for four prompt sets.

Plain labels, "a photo of a {}.", a descriptive ensemble and the 18 CIFAR templates of the
CLIP paper; per-class accuracy and confusion matrices; every prompt saved in results.json.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from atml import benchmark as bench_lib
from atml import figures, runtime
from atml.analysis import representation as rep
from atml.context import RunContext
from atml.models import clip
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Bench, Metrics, Results, RunResults, Table, fixed
from atml.suite.clip import common
from atml.suite.clip.config import ZEROSHOT_PRESETS as PRESETS
from atml.suite.clip.config import ClipConfig


@dataclasses.dataclass
class Data:
    """clip.zeroshot's own results data: every prompt set, class by class (what each accuracy was measured with)."""

    prompts: dict[str, dict[str, list[str]]]


def run(cfg: ClipConfig, ctx: RunContext) -> Results:
    model = common.load_model(cfg, ctx)
    data, names = common.load_data(cfg, ctx, model)
    emb, ips = common.image_embeddings(model, data.val.images, cfg, ctx, "test")
    labels = data.val.labels.numpy()
    sets = common.prompt_sets(names)
    out = Results(notes=common.source_notes(cfg, ctx, model))
    out.keep(Data(sets))
    out.add("test_images", len(labels))
    confusions, per_class, accs = {}, {}, {}
    for name, prompts in sets.items():
        pred = common.zero_shot(emb, common.class_embeddings(model, prompts)).numpy()
        accs[name] = float((pred == labels).mean())
        out.add("acc", accs[name], prompt_set=name)
        confusions[name] = rep.confusion(labels, pred, len(names))
        per_class[name] = confusions[name].diagonal() / confusions[name].sum(1).clip(min=1)
    out.add("best_prompt_set_acc", max(accs.values()))
    if ips is not None:
        out.add("image_encoder_images_per_s", ips, "img/s")
    out.tables += [Table(f"Zero-shot accuracy on {len(labels)} test images per prompt set",
                         ["prompt set", "prompts per class", "example", "accuracy"],
                         [[n, len(next(iter(p.values()))), next(iter(p.values()))[0], accs[n]]
                          for n, p in sets.items()]),
                   Table("Per-class zero-shot accuracy", ["class", *sets],
                         [[c, *(float(per_class[s][i]) for s in sets)] for i, c in enumerate(names)])]
    out.add_figures(ctx.save_figure(confusion_grid(confusions, names, accs), "confusion_matrices"))
    out.add_figures(ctx.save_figure(per_class_figure(per_class, names), "per_class_accuracy"))
    out.notes.append("Ensembles average the L2-normalised text embeddings of a class's prompts, then renormalise "
                     "(Radford et al. 2021). Every prompt is saved under data.prompts in results.json.")
    return out


MANY_CLASSES = 20
"""Above this, class names are left off the axes (they would overlap) and per-class bars become sorted curves."""


@figures.styled
def confusion_grid(confusions: dict[str, np.ndarray], names: list[str], accs: dict[str, float]) -> Any:
    fig, axes = figures.figure(2, 2, width=2.0, height=6.2)
    many = len(names) > MANY_CLASSES
    for ax, (name, matrix) in zip(axes.flat, confusions.items()):
        norm = matrix / matrix.sum(1, keepdims=True).clip(min=1)
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        if many:  # 100 names cannot be read on a column-wide axis; classes in the order of the table
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_xticks(range(len(names)), labels=names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), labels=names, fontsize=6)
        ax.set_title(f"{name}: acc {accs[name]:.3f}")
        ax.set_xlabel("predicted class" if many else "predicted")
        ax.set_ylabel("true class" if many else "true")
        ax.grid(False)
    for ax in list(axes.flat)[len(confusions):]:  # three prompt sets where the descriptive one has no text
        ax.set_visible(False)
    fig.tight_layout()
    fig.colorbar(image, ax=axes.ravel().tolist(), label="share of the true class", fraction=0.03, pad=0.02)
    return fig


@figures.styled
def per_class_figure(per_class: dict[str, np.ndarray], names: list[str]) -> Any:
    fig, axes = figures.figure(1, width=2.0, height=2.2)
    ax = axes[0][0]
    if len(names) > MANY_CLASSES:  # one sorted curve per prompt set: how accuracy spreads over the classes
        for i, (name, acc) in enumerate(per_class.items()):
            ax.plot(np.arange(1, len(names) + 1), np.sort(acc)[::-1], label=name, color=figures.palette(i))
        ax.set_xlabel(f"class, sorted by its accuracy ({len(names)} classes)")
    else:
        width = 0.8 / len(per_class)
        for i, (name, acc) in enumerate(per_class.items()):
            ax.bar(np.arange(len(names)) + i * width - 0.4 + width / 2, acc, width, label=name,
                   color=figures.palette(i))
        ax.set_xticks(range(len(names)), labels=names, rotation=30)
    ax.set_ylabel("zero-shot accuracy")
    ax.set_ylim(0, 1)
    figures.legend_below(fig, ax.get_legend_handles_labels()[0], ncol=len(per_class))
    return fig


def discuss(results: RunResults) -> list[str]:
    accs = results.metrics.by("acc", "prompt_set")
    if not accs:
        return []
    best, worst = max(accs, key=lambda s: accs[s]), min(accs, key=lambda s: accs[s])
    return [f"The best prompt set is '{best}' ({accs[best]:.3f}), the worst '{worst}' ({accs[worst]:.3f}): "
            f"wording alone moves zero-shot accuracy by {(accs[best] - accs[worst]) * 100:.1f} points."]



def bench(cfg: ClipConfig) -> Bench:
    """Embeddings computed once and reused by the three experiments vs recomputed by each."""
    with bench_lib.scratch_context(cfg) as ctx:
        model = common.load_model(cfg, ctx)
        data, names = common.load_data(cfg, ctx, model)
        classes = common.class_embeddings(model, common.prompt_sets(names)["photo"])
        timings = {}
        for label, cached in (("naive (embed per experiment)", False), ("atml (embedding cache)", True)):
            path_dir = runtime.cache_dir() / "clip-embeddings"
            for stale in path_dir.glob(f"{model.arch_name}-*"):
                stale.unlink()
            started = time.perf_counter()
            for _experiment in ("zeroshot", "gap", "align"):
                emb, _ = common.image_embeddings(model, data.val.images, cfg, ctx, "test", use_cache=cached)
            timings[label] = (time.perf_counter() - started,
                              float((common.zero_shot(emb, classes) == data.val.labels).float().mean()))
        throughput = clip_throughput(model, data.val.images, ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"clip.* {cfg.arch}, {len(data.val)} test images, 3 experiments, device "
                               f"{ctx.device}, weights {cfg.weights}", timings, throughput,
                               chance=1 / len(data.val.classes))


def clip_throughput(model: clip.CLIPModel, images: torch.Tensor, device: torch.device,
                    batch_size: int) -> dict[str, Any]:
    """Images/s of the image tower in both memory layouts, and its share of the same-precision GEMM rate."""
    x = model.preprocess(images[:max(batch_size, 64)].to(device))
    flops = bench_lib.flops_of(lambda: model.model.encode_image(x[:1]))
    out: dict[str, Any] = {}
    visual = model.model.visual
    for layout in (torch.channels_last, torch.contiguous_format):
        visual.to(memory_format=layout)
        xl = x.contiguous(memory_format=layout)

        @torch.inference_mode()
        def forward_all(xl: torch.Tensor = xl) -> None:
            for chunk in xl.split(batch_size):
                with runtime.autocast(device):
                    model.model.encode_image(chunk)

        name = "images_per_s_channels_last" if layout == torch.channels_last else "images_per_s_contiguous"
        out[name] = bench_lib.images_per_s(forward_all, len(xl), device)
    visual.to(memory_format=torch.contiguous_format)
    return {**out, **bench_lib.ceiling(out["images_per_s_channels_last"], flops, device)}


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    acc = m.by("acc", "prompt_set")
    return (f"plain labels {fixed(acc['label'])}, \"a photo of a {{}}.\" {fixed(acc['photo'])}, descriptive "
            f"{fixed(acc['descriptive'])}, 18 CIFAR templates {fixed(acc['cifar18'])}")



_CLIP_STL = {"preset": "full", "data": "stl10", "arch": "ViT-B-32", "weights": "openai"}

REFERENCES: tuple[Reference, ...] = (
    Reference("clip.zeroshot", "OpenAI CLIP ViT-B/32 zero-shot STL-10 (CLIP paper, Table 11)", 0.97,
              "Radford et al. 2021, Table 11", "recalled", "best_prompt_set_acc", 0.02, _CLIP_STL),
    Reference("clip.zeroshot", "ViT-B/32 OpenAI weights, zero-shot CIFAR-10 (CLIP_benchmark protocol)", 0.8983,
              "open_clip docs/openclip_classification_results.csv", "checked"),
    Reference("clip.zeroshot", "ViT-B/32 OpenAI weights, zero-shot CIFAR-100 (CLIP_benchmark protocol)", 0.6423,
              "open_clip docs/openclip_classification_results.csv", "checked"),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="clip.zeroshot",
                        summary="CLIP zero-shot accuracy per prompt set, per class, confusion matrices",
                        config_cls=ClipConfig, presets=PRESETS, run=run, discuss=discuss, bench=bench,
                        readme_row=readme_row,
                        references=REFERENCES)
