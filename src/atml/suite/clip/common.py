"""What the CLIP experiments share: config, model and weights, data, prompts, embeddings, gap numbers.

Full: OpenAI's CLIP ViT-B/32 through open_clip on STL-10 (5,000 train / 8,000 test).
Demo: no CLIP weights offline, so atml trains a tiny CLIP through the same open_clip code
(:mod:`atml.train.clip_recipe`) on captioned digits and every experiment runs on it.

Image embeddings are computed once per (weights, images, precision) and cached in
``$ATML_CACHE/clip-embeddings``; the three experiments and repeated runs reuse them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import torch

from atml import benchmark as bench_lib
from atml import runtime, storage
from atml.context import RunContext
from atml.data import ImageDataset
from atml.data import factory as data_factory
from atml.distributed import sharded
from atml.models import clip
from atml.provenance import RANDOM_WEIGHTS_NOTE, CachedFile, DataSource, WeightsInfo
from atml.suite import datasets
from atml.suite.clip.config import ClipConfig
from atml.train import clip_recipe
from atml.train.features import Rows

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
    "airplane": "an aircraft with wings", "bird": "an animal with feathers and a beak",
    "car": "a motor vehicle on a road",
    "cat": "a small furry pet with whiskers", "deer": "a wild animal of the forest",
    "dog": "a loyal pet with four legs",
    "horse": "a large animal with a mane and hooves", "monkey": "a primate with a long tail",
    "ship": "a large boat on the water", "truck": "a heavy vehicle for carrying goods",
    **{w: f"the number {i} written by hand" for i, w in enumerate(clip_recipe.WORDS)},
}
DESCRIPTIVE_TEMPLATES = ("a photo of a {label}, {description}.", "a close-up photo of a {label}, {description}.",
                         "{label}: {description}.")


def prompt_sets(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """``{set name: {class: [prompts]}}`` for the prompt sets compared.

    The descriptive set needs a written description of every class, which atml has for
    STL-10 and the digits only; for other classes it is left out (three sets).
    """
    sets = {"label": {c: [c] for c in classes}, "photo": {c: [f"a photo of a {c}."] for c in classes}}
    if all(c in DESCRIPTIONS for c in classes):
        sets["descriptive"] = {c: [t.format(label=c, description=DESCRIPTIONS[c]) for t in DESCRIPTIVE_TEMPLATES]
                               for c in classes}
    sets["cifar18"] = {c: [t.format(c) for t in CIFAR_TEMPLATES] for c in classes}
    return sets


def load_model(cfg: ClipConfig, ctx: RunContext, *, weights: str | None = None,
               source_key: str = "weights") -> clip.CLIPModel:
    weights = weights or cfg.weights
    built = ctx.model(cfg.arch, weights, family="clip", seed=cfg.seed, epochs=cfg.train_epochs, source=source_key)
    model, info = built.model, built.info
    model.weights_sha256 = info.sha256 or f"{info.spec}-seed{cfg.seed}"
    return model.to(ctx.device).eval()


def load_data(cfg: ClipConfig, ctx: RunContext, model: clip.CLIPModel) -> tuple[ImageDataset, list[str]]:
    """The dataset (the dataset factory; image files decoded for ``model``'s preprocessing) and the class names the
    prompts use.

    Digits are named "zero" ... "nine" (the demo CLIP's captions); other datasets by their
    class names, with underscores read as spaces (CIFAR-100's ``aquarium_fish``, a folder's
    ``golden_retriever``).
    """
    data = datasets.load(cfg, ctx, (model.preprocessing,), limits=(cfg.train_limit, cfg.test_limit),
                         generated=(60, 60), digit_classes=clip_recipe.ALL_DIGITS)
    demo = data_factory.describe(cfg.data).demo  # the digits: their classes are spoken as words in the captions
    names = list(clip_recipe.WORDS) if demo else [c.replace("_", " ") for c in data.train.classes]
    record = ctx.sources["data"]
    if isinstance(record, DataSource):  # the held-out split is the test split here, with the prompts' names
        ctx.record_source("data", dataclasses.replace(record, classes=names, held_out="test"))
    return data, names


@torch.inference_mode()
def compute_embeddings(model: clip.CLIPModel, images: torch.Tensor, device: torch.device, batch_size: int,
                       amp: bool = True) -> tuple[torch.Tensor, float]:
    """Raw image embeddings ``(N, D)`` float32 on the CPU, and the images/s achieved; past
    :func:`~atml.train.features.in_memory_limit` they go to an unlinked file as they come (:class:`Rows`)."""
    def compute(part: torch.Tensor) -> torch.Tensor:
        rows = Rows(len(part))
        for batch in part.split(batch_size):  # nothing waits for the device until the one copy back
            if device.type == "cuda":  # one batch at a time: the split may be a memory map of any size
                batch = batch.pin_memory()
            with runtime.autocast(device, amp):
                rows.add(model.encode_images(batch.to(device, non_blocking=True)))
        return rows.result()

    start = time.perf_counter()
    embeddings = sharded(compute, images, device)  # under torchrun: one shard per rank, gathered
    return embeddings, len(images) / max(time.perf_counter() - start, 1e-9)


def image_embeddings(model: clip.CLIPModel, images: torch.Tensor, cfg: ClipConfig, ctx: RunContext,
                     split: str, *, use_cache: bool = True) -> tuple[torch.Tensor, float | None]:
    """Raw embeddings of ``images``, from the cache when these weights already embedded these images, and the
    image encoder's images/s when they were computed now (None when read from the cache)."""
    hasher = hashlib.sha256()
    for chunk in images.split(1024):  # hashed in place, chunk by chunk: no copy of the split
        hasher.update(chunk.contiguous().numpy())
    digest = hasher.hexdigest()[:16]
    precision = bench_lib.PRECISION_NAMES[runtime.compute_dtype(ctx.device, cfg.amp)]  # bf16 and fp32 differ
    key = f"{model.arch_name}-{model.weights_sha256[:16]}-{digest}-{len(images)}-{precision}"
    path = runtime.cache_dir() / "clip-embeddings" / f"{key}.pt"
    hit = use_cache and path.is_file()
    ips: float | None = None
    if hit:
        embeddings = storage.torch_load(path, mmap=True)["embeddings"]  # file pages: any number of images
    else:
        embeddings, ips = compute_embeddings(model, images, ctx.device, cfg.batch_size, cfg.amp)
        if use_cache:
            storage.torch_save({"embeddings": embeddings}, path)
    ctx.record_source(f"embeddings_{split}", CachedFile(str(path), cache_hit=hit, images=len(images)))
    return embeddings, ips


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


def source_notes(cfg: ClipConfig, ctx: RunContext, model: clip.CLIPModel) -> list[str]:
    weights, data = ctx.sources.get("weights"), ctx.sources.get("data")
    out = [f"Model: open_clip {cfg.arch}; weights: "
           f"{weights.description if isinstance(weights, WeightsInfo) else cfg.weights}."]
    if isinstance(data, DataSource):
        out.append(f"Data: {data.source}; {data.train} train / {data.val} test images.")
    if isinstance(weights, WeightsInfo) and weights.demo:
        out.append("Demo preset: no CLIP weights offline, so atml trained a tiny CLIP through open_clip's own model "
                   "and loss on captioned digits (70% split) and the experiment runs on it, on the held-out 30%; its "
                   "numbers describe that model, not OpenAI's ViT-B/32.")
    if isinstance(weights, WeightsInfo) and not weights.pretrained:
        out.append(RANDOM_WEIGHTS_NOTE)
    if model.sigmoid:
        out.append(SIGLIP_NOTE)
    return out


SIGLIP_NOTE = ("SigLIP (Zhai et al. 2023) is trained with a pairwise sigmoid loss: each image-text pair is a yes/no "
               "question with a learnt bias, not one choice among the batch's texts. Zero-shot prediction is still "
               "the class whose prompt has the highest logit (scale x cosine + bias, so the highest cosine), but its "
               "probabilities are independent sigmoids that need not sum to 1. The gap is measured the same way, "
               "on L2-normalised embeddings; the softmax-temperature explanation of CLIP's gap (Liang et al. 2022) "
               "does not carry over, so a SigLIP gap is a property of that training, not comparable one-for-one.")




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


GAP_MEASURES = ("image_norm", "text_norm", "centroid_distance", "paired_cosine", "image_image_cosine",
                "text_text_cosine", "gap_variance_share")
"""What :func:`gap_metrics` measures, in its order."""


def _mean_offdiag(sim: torch.Tensor) -> torch.Tensor:
    n = sim.shape[0]
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


