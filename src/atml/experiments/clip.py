"""The CLIP experiments: ``clip.zeroshot``, ``clip.gap``, ``clip.align``.

Full: OpenAI's CLIP ViT-B/32 through open_clip on STL-10 (5,000 train / 8,000 test).
Demo: no CLIP weights offline, so atml trains a tiny CLIP through the same open_clip code
(:mod:`atml.train.clip_recipe`) on captioned digits and every experiment runs on it.

Image embeddings are computed once per (weights, images) and cached in
``$ATML_CACHE/clip-embeddings``; the three experiments and repeated runs reuse them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atml import bench as bench_lib
from atml import runtime, storage
from atml.analysis import representation as rep
from atml.config import RunConfig, require_positive
from atml.data import ImageDataset, digits, rehearsal, stl10
from atml.errors import UsageError
from atml.models import clip
from atml.registry import Experiment
from atml.report import plots
from atml.runner import RunContext
from atml.train import clip_recipe
from atml.distributed import sharded

DATA = ("stl10", "digits", "generated-stl10", "rehearsal-stl10")

# The 18 CIFAR-10 templates of the CLIP paper (openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet and
# data/prompts.md), used as one ensemble.
CIFAR_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
)
DESCRIPTIONS = {
    "airplane": "an aircraft with wings", "bird": "an animal with feathers and a beak", "car": "a motor vehicle on a road",
    "cat": "a small furry pet with whiskers", "deer": "a wild animal of the forest", "dog": "a loyal pet with four legs",
    "horse": "a large animal with a mane and hooves", "monkey": "a primate with a long tail",
    "ship": "a large boat on the water", "truck": "a heavy vehicle for carrying goods",
    **{w: f"the number {i} written by hand" for i, w in enumerate(clip_recipe.WORDS)},
}
DESCRIPTIVE_TEMPLATES = ("a photo of a {label}, {description}.", "a close-up photo of a {label}, {description}.",
                         "{label}: {description}.")


def prompt_sets(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """``{set name: {class: [prompts]}}`` for the four prompt sets compared."""
    return {
        "label": {c: [c] for c in classes},
        "photo": {c: [f"a photo of a {c}."] for c in classes},
        "descriptive": {c: [t.format(label=c, description=DESCRIPTIONS[c]) for t in DESCRIPTIVE_TEMPLATES]
                        for c in classes},
        "cifar18": {c: [t.format(c) for t in CIFAR_TEMPLATES] for c in classes},
    }


@dataclasses.dataclass
class ClipConfig(RunConfig):
    arch: str = "ViT-B-32"
    """ViT-B-32 | clip-digits (the demo's tiny CLIP)."""
    weights: str = "openai"
    """openai | random | train-digits (demo) | path to an open_clip state dict."""
    data: str = "stl10"
    """stl10 (official binaries) | digits (demo) | generated-stl10 (smoke) | rehearsal-stl10 (timing only)."""
    batch_size: int = 128
    test_limit: int = 0
    """Test images used (0: all 8,000 of STL-10)."""
    train_limit: int = 0
    """Training images used where a split is fitted (clip.align; 0: all)."""
    train_epochs: int = clip_recipe.Recipe.epochs
    """Epochs of the demo CLIP's training (weights=train-digits)."""
    amp: bool = True
    """bf16 autocast for the encoders on CUDA (ignored on CPU)."""

    def validate(self) -> None:
        super().validate()
        if self.arch not in clip.ARCHS:
            raise UsageError(f"arch={self.arch!r} is not valid; choose one of {', '.join(clip.ARCHS)}")
        if self.data not in DATA:
            raise UsageError(f"data={self.data!r} is not valid; choose one of {', '.join(DATA)}")
        if self.weights == "train-digits" and self.arch != "clip-digits":
            raise UsageError("weights=train-digits needs arch=clip-digits")
        require_positive(self, "batch_size", "train_epochs")
        if self.test_limit < 0 or self.train_limit < 0:
            raise UsageError("test_limit and train_limit must be >= 0 (0 means all)")


def load_model(cfg: ClipConfig, ctx: RunContext, *, weights: str | None = None,
               source_key: str = "weights") -> clip.CLIPModel:
    weights = weights or cfg.weights
    if weights == "train-digits":
        recipe = dataclasses.replace(clip_recipe.Recipe(), epochs=cfg.train_epochs, seed=cfg.seed)
        state, info = clip_recipe.digits_clip(recipe, device=ctx.device, progress=ctx.progress, say=ctx.say)
        model, info = clip.build(cfg.arch, "state", state=state, state_info=info)
    else:
        model, info = clip.build(cfg.arch, weights, offline=ctx.offline, seed=cfg.seed)
    ctx.record_source(source_key, dataclasses.asdict(info))
    model.weights_sha256 = info.sha256 or f"{info.spec}-seed{cfg.seed}"
    return model.to(ctx.device).eval()


def load_data(cfg: ClipConfig, ctx: RunContext) -> tuple[ImageDataset, list[str]]:
    """The dataset and the class names the prompts use (digits: "zero" ... "nine")."""
    if cfg.data == "stl10":
        root = Path(cfg.data_dir) if cfg.data_dir else runtime.cache_dir() / "data"
        data = stl10.load(root, offline=ctx.offline)
    elif cfg.data == "generated-stl10":
        data = stl10.load_generated(stl10.write_binaries(ctx.scratch("data"), n_train=60, n_test=60, seed=cfg.seed))
    elif cfg.data in rehearsal.NAMES:
        data = rehearsal.load(cfg.data, cfg.seed)
    else:
        data = digits.load(clip_recipe.ALL_DIGITS, seed=cfg.seed)
    data.train = data.train.subset(cfg.train_limit, seed=cfg.seed)
    data.val = data.val.subset(cfg.test_limit, seed=cfg.seed + 1)
    names = list(clip_recipe.WORDS) if cfg.data == "digits" else list(stl10.CLASSES)
    ctx.record_source("data", {"name": data.name, "source": data.source, "train": len(data.train),
                               "test": len(data.val), "classes": names})
    return data, names


@torch.inference_mode()
def compute_embeddings(model: clip.CLIPModel, images: torch.Tensor, device: torch.device, batch_size: int,
                       amp: bool = True) -> tuple[torch.Tensor, float]:
    """Raw image embeddings ``(N, D)`` float32 on the CPU, and the images/s achieved."""
    def compute(part: torch.Tensor) -> torch.Tensor:
        if device.type == "cuda":
            part = part.pin_memory()
        out = []
        for batch in part.split(batch_size):  # nothing waits for the device until the one copy back
            with runtime.autocast(device, amp):
                out.append(model.encode_images(batch.to(device, non_blocking=True)))
        return torch.cat(out).float().cpu()

    start = time.perf_counter()
    embeddings = sharded(compute, images, device)  # under torchrun: one shard per rank, gathered
    return embeddings, len(images) / max(time.perf_counter() - start, 1e-9)


def image_embeddings(model: clip.CLIPModel, images: torch.Tensor, cfg: ClipConfig, ctx: RunContext,
                     split: str, *, use_cache: bool = True) -> torch.Tensor:
    """Raw embeddings of ``images``, from the cache when these weights already embedded these images."""
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    precision = bench_lib.PRECISION_NAMES[runtime.compute_dtype(ctx.device, cfg.amp)]  # bf16 and fp32 differ
    key = f"{model.arch_name}-{model.weights_sha256[:16]}-{digest}-{len(images)}-{precision}"
    path = runtime.cache_dir() / "clip-embeddings" / f"{key}.pt"
    hit = use_cache and path.is_file()
    if hit:
        embeddings = storage.torch_load(path)["embeddings"]
    else:
        embeddings, ips = compute_embeddings(model, images, ctx.device, cfg.batch_size, cfg.amp)
        ctx.sources.setdefault("embedding_images_per_s", {})[split] = ips
        if use_cache:
            storage.torch_save({"embeddings": embeddings}, path)
    ctx.record_source(f"embeddings_{split}", {"file": str(path), "cache_hit": hit, "images": len(images)})
    return embeddings


@torch.inference_mode()
def class_embeddings(model: clip.CLIPModel, prompts: dict[str, list[str]]) -> torch.Tensor:
    """One unit vector per class: the normalised mean of its prompts' normalised embeddings."""
    texts = [t for group in prompts.values() for t in group]
    emb = torch.cat([model.encode_texts(texts[i:i + 256], normalize=True).float().cpu()
                     for i in range(0, len(texts), 256)])
    per_class = emb.split([len(group) for group in prompts.values()])
    return torch.nn.functional.normalize(torch.stack([e.mean(0) for e in per_class]), dim=1)


@torch.inference_mode()
def paired_captions(model: clip.CLIPModel, labels: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Raw text embeddings of one caption per image: its class in the CIFAR templates, in turn."""
    texts = [CIFAR_TEMPLATES[i % len(CIFAR_TEMPLATES)].format(names[int(y)]) for i, y in enumerate(labels)]
    unique = sorted(set(texts))
    emb = torch.cat([model.encode_texts(unique[i:i + 256]).float().cpu() for i in range(0, len(unique), 256)])
    index = {t: i for i, t in enumerate(unique)}
    return emb[[index[t] for t in texts]], texts


def zero_shot(image_emb: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Predicted class per image: the highest cosine similarity."""
    return (torch.nn.functional.normalize(image_emb, dim=-1) @ classes.T).argmax(1)


def source_notes(cfg: ClipConfig, ctx: RunContext) -> list[str]:
    weights = ctx.sources.get("weights", {})
    data = ctx.sources.get("data", {})
    out = [f"Model: open_clip {cfg.arch}; weights: {weights.get('description', cfg.weights)}.",
           f"Data: {data.get('source', cfg.data)}; {data.get('train')} train / {data.get('test')} test images."]
    if cfg.weights == "train-digits":
        out.append("Demo preset: no CLIP weights offline, so atml trained a tiny CLIP through open_clip's own model "
                   "and loss on captioned digits (70% split) and the experiment runs on it, on the held-out 30%; its "
                   "numbers describe that model, not OpenAI's ViT-B/32.")
    if cfg.weights == "random":
        out.append("Random weights: the numbers test the code path only.")
    return out


# --- clip.zeroshot ----------------------------------------------------------------------------


def run_zeroshot(cfg: ClipConfig, ctx: RunContext) -> dict[str, Any]:
    model = load_model(cfg, ctx)
    data, names = load_data(cfg, ctx)
    emb = image_embeddings(model, data.val.images, cfg, ctx, "test")
    labels = data.val.labels.numpy()
    sets = prompt_sets(names)
    metrics: dict[str, Any] = {"test_images": len(labels)}
    confusions, per_class = {}, {}
    for name, prompts in sets.items():
        pred = zero_shot(emb, class_embeddings(model, prompts)).numpy()
        metrics[f"acc_{name}"] = float((pred == labels).mean())
        confusions[name] = rep.confusion(labels, pred, len(names))
        per_class[name] = confusions[name].diagonal() / confusions[name].sum(1).clip(min=1)
    best = max(sets, key=lambda s: metrics[f"acc_{s}"])
    metrics["best_prompt_set_acc"] = metrics[f"acc_{best}"]
    if ips := ctx.sources.get("embedding_images_per_s", {}).get("test"):
        metrics["image_encoder_images_per_s"] = ips
    tables = [{"title": f"Zero-shot accuracy on {len(labels)} test images per prompt set",
               "columns": ["prompt set", "prompts per class", "example", "accuracy"],
               "rows": [[n, len(next(iter(p.values()))), next(iter(p.values()))[0], metrics[f"acc_{n}"]]
                        for n, p in sets.items()]},
              {"title": "Per-class zero-shot accuracy",
               "columns": ["class", *sets], "rows": [[c, *(float(per_class[s][i]) for s in sets)]
                                                     for i, c in enumerate(names)]}]
    figures = ctx.save_figure(confusion_grid(confusions, names, metrics), "confusion_matrices")
    figures += ctx.save_figure(per_class_figure(per_class, names), "per_class_accuracy")
    notes = source_notes(cfg, ctx)
    notes.append("Ensembles average the L2-normalised text embeddings of a class's prompts, then renormalise "
                 "(Radford et al. 2021). Every prompt is saved under 'prompts' in results.json.")
    return {"metrics": metrics, "figures": figures, "tables": tables, "notes": notes, "prompts": sets}


@plots.styled
def confusion_grid(confusions: dict[str, np.ndarray], names: list[str], metrics: dict[str, Any]) -> Any:
    fig, axes = plots.figure(2, 2, width=2.0, height=6.2)
    for ax, (name, matrix) in zip(axes.flat, confusions.items()):
        norm = matrix / matrix.sum(1, keepdims=True).clip(min=1)
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), labels=names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), labels=names, fontsize=6)
        ax.set_title(f"{name}: acc {metrics[f'acc_{name}']:.3f}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.grid(False)
    fig.tight_layout()
    fig.colorbar(image, ax=axes.ravel().tolist(), label="share of the true class", fraction=0.03, pad=0.02)
    return fig


@plots.styled
def per_class_figure(per_class: dict[str, np.ndarray], names: list[str]) -> Any:
    fig, axes = plots.figure(1, width=2.0, height=2.2)
    ax = axes[0][0]
    width = 0.8 / len(per_class)
    for i, (name, acc) in enumerate(per_class.items()):
        ax.bar(np.arange(len(names)) + i * width - 0.4 + width / 2, acc, width, label=name, color=plots.palette(i))
    ax.set_xticks(range(len(names)), labels=names, rotation=30)
    ax.set_ylabel("zero-shot accuracy")
    ax.set_ylim(0, 1)
    plots.legend_below(fig, ax.get_legend_handles_labels()[0], ncol=len(per_class))
    return fig


def discuss_zeroshot(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    accs = {k.removeprefix("acc_"): v for k, v in m.items() if k.startswith("acc_")}
    if not accs:
        return []
    best, worst = max(accs, key=accs.get), min(accs, key=accs.get)
    return [f"The best prompt set is '{best}' ({accs[best]:.3f}), the worst '{worst}' ({accs[worst]:.3f}): "
            f"wording alone moves zero-shot accuracy by {(accs[best] - accs[worst]) * 100:.1f} points."]


# --- clip.gap ---------------------------------------------------------------------------------


@dataclasses.dataclass
class GapConfig(ClipConfig):
    per_class: int = 10
    """Test images per class in the balanced sample (10 classes: 100 images)."""
    random_init: bool = True
    """Also measure the gap of a randomly initialised model of the same architecture."""

    def validate(self) -> None:
        super().validate()
        if self.per_class < 2:
            raise UsageError(f"per_class={self.per_class} is not valid; use an integer >= 2")


def gap_metrics(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """How far apart the two modalities are, for paired raw embeddings ``(N, D)``."""
    img_n = torch.nn.functional.normalize(image.double(), dim=1)
    txt_n = torch.nn.functional.normalize(text.double(), dim=1)
    gap = img_n.mean(0) - txt_n.mean(0)
    joint = torch.cat([img_n, txt_n])
    centred = joint - joint.mean(0)
    if gap.norm() > 0:
        share = float((centred @ (gap / gap.norm())).pow(2).mean() / centred.pow(2).sum(1).mean())
    else:  # coinciding centroids: there is no gap direction, and no variance along it
        share = 0.0
    return {
        "image_norm": float(image.double().norm(dim=1).mean()), "text_norm": float(text.double().norm(dim=1).mean()),
        "centroid_distance": float(gap.norm()),
        "paired_cosine": float((img_n * txt_n).sum(1).mean()),
        "image_image_cosine": float(_mean_offdiag(img_n @ img_n.T)),
        "text_text_cosine": float(_mean_offdiag(txt_n @ txt_n.T)),
        "gap_variance_share": share,
    }


def _mean_offdiag(sim: torch.Tensor) -> torch.Tensor:
    n = sim.shape[0]
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


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


def run_gap(cfg: GapConfig, ctx: RunContext) -> dict[str, Any]:
    model = load_model(cfg, ctx)
    data, names = load_data(cfg, ctx)
    emb = image_embeddings(model, data.val.images, cfg, ctx, "test")
    idx = rep.balanced_indices(data.val.labels, cfg.per_class, seed=cfg.seed)
    labels = data.val.labels[idx]
    image = emb[idx]
    text, captions = paired_captions(model, labels, names)
    metrics: dict[str, Any] = {"sample": len(idx), **gap_metrics(image, text)}
    # Why zero-shot survives the gap: moving every image by the same vector leaves the ranking of classes
    # almost unchanged. Measured on the whole test split.
    classes = class_embeddings(model, prompt_sets(names)["photo"])
    metrics["test_acc_photo"] = float((zero_shot(emb, classes) == data.val.labels).float().mean())
    shift = gap_shift(image_embeddings(model, data.train.images, cfg, ctx, "train"), classes)
    shifted = close_gap(emb, shift)
    metrics["test_acc_photo_gap_closed"] = float((zero_shot(shifted, classes) == data.val.labels).float().mean())
    metrics |= {f"gap_closed_{k}": v for k, v in gap_metrics(shifted[idx], text).items()
                if k in ("centroid_distance", "paired_cosine")}
    ctx.step(f"joint t-SNE and UMAP of {len(idx)} images and their captions")
    figures = ctx.save_figure(joint_figure(image, text, labels, names, cfg.seed), "modality_gap_embeddings")
    notes = source_notes(cfg, ctx)
    if cfg.random_init and cfg.weights != "random":
        random_model = load_model(cfg, ctx, weights="random", source_key="random_init_weights")
        r_img, _ = compute_embeddings(random_model, data.val.images[idx], ctx.device, cfg.batch_size, cfg.amp)
        r_txt, _ = paired_captions(random_model, labels, names)
        metrics |= {f"random_init_{k}": v for k, v in gap_metrics(r_img, r_txt).items()}
        figures += ctx.save_figure(joint_figure(r_img, r_txt, labels, names, cfg.seed, methods=("tsne",),
                                                title="random initialisation"), "modality_gap_random_init")
        notes.append(f"Random initialisation: the same architecture with open_clip's initialisation (seed {cfg.seed}), "
                     "no training, on the same images and captions.")
    notes.append(f"Joint embeddings: t-SNE ({rep.tsne_backend()}) and UMAP on both modalities together, after PCA "
                 "to 50 dimensions; 'normalised' = each embedding L2-normalised first.")
    notes.append(f"Sample: {len(idx)} test images, {cfg.per_class} per class, each paired with one caption of its "
                 "class (the 18 CIFAR templates in turn). 'Gap closed': every test image embedding moved by the "
                 f"difference between the centroid of the class prompts ('a photo of a {{}}.') and the centroid of "
                 f"the {len(data.train)} training images, then renormalised; no test image and no label is used to "
                 "fit the shift.")
    table = {"title": "The modality gap in numbers (L2-normalised embeddings unless 'norm')",
             "columns": ["measure", "trained" if cfg.weights != "random" else "this model",
                         *(["random init"] if "random_init_centroid_distance" in metrics else [])],
             "rows": [[k, metrics[k], *([metrics[f"random_init_{k}"]] if f"random_init_{k}" in metrics else [])]
                      for k in gap_metrics(image[:2], text[:2])]}
    return {"metrics": metrics, "figures": figures, "tables": [table], "notes": notes,
            "captions": captions[:20]}


@plots.styled
def joint_figure(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, names: list[str], seed: int,
                 methods: tuple[str, ...] = ("tsne", "umap"), title: str = "") -> Any:
    """Joint 2-D embeddings of both modalities, raw and L2-normalised, one panel per (method, scaling)."""
    fig, axes = plots.figure(len(methods) * 2, width=2.0, height=2.4)
    n = len(image)
    cmap = plots.plt.get_cmap("tab10")
    col = 0
    for method in methods:
        for scaling in ("raw", "normalised"):
            x = torch.cat([image, text]).double()
            if scaling == "normalised":
                x = torch.nn.functional.normalize(x, dim=1)
            xy = (rep.tsne if method == "tsne" else rep.umap_embed)(x.numpy(), seed=seed)
            ax = axes[0][col]
            colours = [cmap(int(c) % 10) for c in labels]
            ax.scatter(xy[:n, 0], xy[:n, 1], c=colours, marker="o", s=8, label="image")
            ax.scatter(xy[n:, 0], xy[n:, 1], c=colours, marker="^", s=10, edgecolors="k", linewidths=0.3,
                       label="text")
            ax.set_title(f"{method.upper() if method == 'umap' else 't-SNE'}, {scaling}")
            ax.set_xticks([])
            ax.set_yticks([])
            col += 1
    axes[0][0].legend(frameon=False, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def discuss_gap(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    if "centroid_distance" not in m:
        return []
    return [_gap_sentence(m), _norm_sentence(m), _closing_sentence(m), *_random_init_sentence(m)]


def _gap_sentence(m: dict[str, Any]) -> str:
    cones = min(m["image_image_cosine"], m["text_text_cosine"]) > m["paired_cosine"]
    return (f"Images and their captions sit {m['centroid_distance']:.2f} apart (distance of the normalised centroids, "
            f"2 at most); a paired image and caption have cosine {m['paired_cosine']:.2f}, two images "
            f"{m['image_image_cosine']:.2f} and two captions {m['text_text_cosine']:.2f}: "
            + ("each modality is closer to itself than to its own pairs, two separate cones."
               if cones else "pairs are at least as close as members of one modality, so no separate cones here.")
            + f" The gap direction carries {m['gap_variance_share']:.0%} of the joint variance.")


def _norm_sentence(m: dict[str, Any]) -> str:
    img, txt = m["image_norm"], m["text_norm"]
    norms = (f"Raw norms differ (images {img:.2f}, texts {txt:.2f})" if abs(img - txt) > 0.05 * max(img, txt)
             else f"Raw norms are close (images {img:.2f}, texts {txt:.2f})")
    if m["centroid_distance"] > GAP_THRESHOLD:
        return (norms + f"; after L2-normalisation the centroids are still {m['centroid_distance']:.2f} apart: the "
                "gap is a difference of directions, not of norms.")
    return norms + "; after L2-normalisation the centroids nearly coincide."


def _closing_sentence(m: dict[str, Any]) -> str:
    change = m["test_acc_photo_gap_closed"] - m["test_acc_photo"]
    text = (f"Zero-shot accuracy on the whole test split is {m['test_acc_photo']:.3f} as is and "
            f"{m['test_acc_photo_gap_closed']:.3f} with the gap closed by a translation fitted on training images and "
            "the class prompts. ")
    if abs(change) < 0.02:
        return text + ("Closing it changes accuracy by less than 2 points: a translation adds nearly the same amount to "
                       "every class's score, so the ranking zero-shot relies on survives the gap.")
    return text + (f"Closing it moves accuracy by {change * 100:+.1f} points: the translation changes the classes' "
                   "scores by different amounts, so the gap is not neutral for this model's ranking.")


def _random_init_sentence(m: dict[str, Any]) -> list[str]:
    if "random_init_centroid_distance" not in m:
        return []
    distance, cosine = m["random_init_centroid_distance"], m["random_init_paired_cosine"]
    if distance > GAP_THRESHOLD:
        return [f"At random initialisation the centroids are already {distance:.2f} apart (paired cosine "
                f"{cosine:.2f}): the gap exists before any training (the cone effect of Liang et al. 2022)."]
    return [f"At random initialisation the centroids are only {distance:.2f} apart (paired cosine {cosine:.2f}): "
            "in this model the gap appears with training rather than at initialisation."]


GAP_THRESHOLD = 0.1
"""Centroid distance (normalised embeddings, at most 2) below which the report calls the modalities coincident."""


# --- clip.align -------------------------------------------------------------------------------


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` minimising ``||source @ R - target||_F`` (scipy)."""
    from scipy.linalg import orthogonal_procrustes

    rotation, _ = orthogonal_procrustes(source, target)
    return rotation


def run_align(cfg: GapConfig, ctx: RunContext) -> dict[str, Any]:
    model = load_model(cfg, ctx)
    data, names = load_data(cfg, ctx)
    train_emb = image_embeddings(model, data.train.images, cfg, ctx, "train")
    test_emb = image_embeddings(model, data.val.images, cfg, ctx, "test")
    norm = torch.nn.functional.normalize
    train_txt, _ = paired_captions(model, data.train.labels, names)
    test_txt, _ = paired_captions(model, data.val.labels, names)
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
        classes = class_embeddings(model, prompt_sets(names)[name])
        metrics[f"acc_{name}_before"] = float((zero_shot(test_emb, classes) == data.val.labels).float().mean())
        metrics[f"acc_{name}_after"] = float((zero_shot(aligned, classes) == data.val.labels).float().mean())
    idx = rep.balanced_indices(data.val.labels, cfg.per_class, seed=cfg.seed)
    before = gap_metrics(test_emb[idx], test_txt[idx])
    after = gap_metrics(aligned[idx], test_txt[idx])
    metrics |= {f"{k}_before": before[k] for k in ("centroid_distance", "paired_cosine")}
    metrics |= {f"{k}_after": after[k] for k in ("centroid_distance", "paired_cosine")}
    figures = ctx.save_figure(alignment_figure(norm(test_emb[idx], dim=1), aligned[idx], norm(test_txt[idx], dim=1),
                                               data.val.labels[idx]), "alignment_projection")
    notes = source_notes(cfg, ctx)
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


def discuss_align(results: dict[str, Any]) -> list[str]:
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


# --- bench ------------------------------------------------------------------------------------


def bench(cfg: ClipConfig) -> dict[str, Any]:
    """Embeddings computed once and reused by the three experiments vs recomputed by each."""
    cfg = dataclasses.replace(cfg, weights="random" if cfg.weights == "train-digits" else cfg.weights)
    with bench_lib.scratch_context(cfg) as ctx:
        model = load_model(cfg, ctx)
        data, names = load_data(cfg, ctx)
        classes = class_embeddings(model, prompt_sets(names)["photo"])
        timings = {}
        for label, cached in (("naive (embed per experiment)", False), ("atml (embedding cache)", True)):
            path_dir = runtime.cache_dir() / "clip-embeddings"
            for stale in path_dir.glob(f"{model.arch_name}-*"):
                stale.unlink()
            started = time.perf_counter()
            for _experiment in ("zeroshot", "gap", "align"):
                emb = image_embeddings(model, data.val.images, cfg, ctx, "test", use_cache=cached)
            timings[label] = (time.perf_counter() - started,
                              float((zero_shot(emb, classes) == data.val.labels).float().mean()))
        throughput = clip_throughput(model, data.val.images, ctx.device, cfg.batch_size)
    return bench_lib.summarise(f"clip.* {cfg.arch}, {len(data.val)} test images, 3 experiments, device "
                               f"{ctx.device}, weights {cfg.weights} (speed only)", timings, throughput)


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


_SMOKE = {"arch": "clip-digits", "weights": "random", "data": "generated-stl10", "batch_size": 32}
_DEMO = {"offline": True, "arch": "clip-digits", "weights": "train-digits", "data": "digits", "batch_size": 256}
_REHEARSAL = {"data": "rehearsal-stl10", "weights": "random"}  # the full preset on generated data (timing)

EXPERIMENTS = (
    Experiment(name="clip.zeroshot", summary="CLIP zero-shot accuracy per prompt set, per class, confusion matrices",
               config_cls=ClipConfig, run=run_zeroshot, bench=bench, discuss=discuss_zeroshot,
               presets={"smoke": _SMOKE, "demo": _DEMO, "full": {}, "rehearsal": _REHEARSAL}),
    Experiment(name="clip.gap", summary="The modality gap: joint t-SNE/UMAP, distances, variance share, random init",
               config_cls=GapConfig, run=run_gap, discuss=discuss_gap,
               presets={"smoke": {**_SMOKE, "per_class": 3}, "demo": _DEMO, "full": {}, "rehearsal": _REHEARSAL}),
    Experiment(name="clip.align", summary="Orthogonal Procrustes from image to text embeddings, fitted on train pairs",
               config_cls=GapConfig, run=run_align, discuss=discuss_align,
               presets={"smoke": {**_SMOKE, "per_class": 3}, "demo": _DEMO, "full": {}, "rehearsal": _REHEARSAL}),
)
