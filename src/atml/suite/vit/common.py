"""What the ViT experiments share: config fields, the model and its weights, images and data.

Full: DeiT-Small/16 with ImageNet weights (timm, or transformers with ``backend=hf``),
scikit-image's sample photos and CIFAR-10. Demo: no ImageNet weights offline, so atml
trains its small ``vit-digits`` ViT on digits 0-4 (cached) and every experiment runs on
it; the sample photos still go through DeiT-Small when its weights are on disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from atml.context import RunContext
from atml.data import ImageDataset, ImageSplit, digits
from atml.data.images import read_images, squared
from atml.errors import UsageError, WeightsError
from atml.models import vit
from atml.provenance import RANDOM_WEIGHTS_NOTE, WeightsInfo
from atml.suite import datasets
from atml.suite.vit.config import ViTConfig

PHOTOS = {"chelsea": "cat (Chelsea)", "coffee": "cup of coffee", "astronaut": "astronaut (Eileen Collins)",
          "rocket": "rocket on its launch pad"}

def load_model(cfg: ViTConfig, ctx: RunContext, *, weights: str | None = None, arch: str | None = None,
               source_key: str = "weights") -> vit.ViT:
    """The ViT named by the config (or the given weights/arch), on the device, in eval mode."""
    weights = weights or cfg.weights
    arch = arch or cfg.arch
    built = ctx.model(arch, weights, family="vit", seed=cfg.seed, epochs=cfg.train_epochs, source=source_key,
                      backend=cfg.backend, input_size=cfg.input_size)
    return built.model.to(ctx.device).eval()


def load_labelled(cfg: ViTConfig, ctx: RunContext, model: vit.ViT, *,
                  digit_classes: tuple[int, ...] = digits.PRETRAIN_CLASSES, record: bool = True) -> ImageDataset:
    """The labelled set of ``cfg.data`` (the dataset factory); for digits, the classes asked for (0-4: the demo
    ViT's own). Image files (a folder, ImageNet) are decoded at the size ``model``'s preprocessing resizes to,
    with its filter, so the model crops them exactly as its own pipeline would."""
    return datasets.load(cfg, ctx, (model.preprocessing,), record=record, generated=(100, 50),
                         digit_classes=digit_classes)


def sample_photos(cfg: Any, model: vit.ViT, notes: list[str]) -> dict[str, torch.Tensor]:
    """scikit-image's sample photos (shipped in the package) as uint8 ``(3, S, S)``, resized as ``model``'s weights
    expect (:func:`atml.suite.datasets.decode_plan`, said in ``notes``), as image files would be."""
    import skimage.data

    plan = datasets.decode_plan(cfg.image_size, (model.preprocessing,))
    notes.append(f"scikit-image's sample photos: {plan.why}.")
    return {name: squared(np.ascontiguousarray(getattr(skimage.data, name)()), plan) for name in PHOTOS}


def user_images(cfg: Any, model: vit.ViT, notes: list[str]) -> dict[str, torch.Tensor]:
    """``cfg.images`` read with the run's ``skip_bad_images`` and decoded as ``model``'s weights expect (said in
    ``notes``); files left out are listed in ``notes``."""
    skipped: list[str] = []
    plan = datasets.decode_plan(cfg.image_size, (model.preprocessing,))
    images = read_images(cfg.images, skip_bad=cfg.skip_bad_images, skipped=skipped, square=plan)
    notes.append(f"Your images: {plan.why}.")
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) left out (skip_bad_images=true): {'; '.join(skipped)}")
    return images


def imagenet_photo_model(cfg: ViTConfig, ctx: RunContext) -> tuple[vit.ViT | None, str]:
    """DeiT-Small with ImageNet weights when they are available, else ``None`` and why not."""
    if cfg.arch == vit.DEIT_SMALL:
        return load_model(cfg, ctx), ""
    try:
        model = load_model(cfg, ctx, weights="imagenet", arch=vit.DEIT_SMALL, source_key="photo_weights")
    except WeightsError as err:
        return None, str(err)
    return model, ""


@torch.inference_mode()
def predict(model: vit.ViT, images: torch.Tensor, device: torch.device, batch_size: int,
            keep: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax probabilities ``(N, classes)`` for uint8 images (any size; the model's preprocessing)."""
    out = []
    for start in range(0, len(images), batch_size):
        x = model.preprocess(images[start:start + batch_size].to(device))
        k = keep[start:start + batch_size] if keep is not None else None
        out.append(model(x, k).float().softmax(-1).cpu())
    return torch.cat(out)


@torch.inference_mode()
def topk_accuracy(model: vit.ViT, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int,
                  ks: tuple[int, ...]) -> dict[int, float]:
    """Top-k accuracy for each k, counted batch by batch (nothing kept per image: memory flat in N)."""
    hits = dict.fromkeys(ks, 0)
    for start in range(0, len(images), batch_size):
        logits = model(model.preprocess(images[start:start + batch_size].to(device))).float()
        top = logits.topk(max(ks), dim=1).indices.cpu()  # (B, max k)
        match = top == labels[start:start + batch_size, None]
        for k in ks:
            hits[k] += int(match[:, :k].any(1).sum())
    return {k: hits[k] / max(len(images), 1) for k in ks}


def as_batch(images: dict[str, torch.Tensor], model: vit.ViT, device: torch.device) -> torch.Tensor:
    """Preprocess images of different sizes one by one into a single normalised batch."""
    return torch.cat([model.preprocess(img[None].to(device)) for img in images.values()])


def split_images(split: ImageSplit, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` images of a split, one per class first, named by their label."""
    order: list[int] = []
    for c in range(len(split.classes)):
        idx = (split.labels == c).nonzero().flatten()
        if len(idx):
            order.append(int(idx[0]))
    order += [i for i in range(len(split)) if i not in order]
    return {f"{split.name(i) or f'val[{i}]'} label {split.classes[int(split.labels[i])]}": split.images[i]
            for i in order[:count]}


PROBE_IMAGES = 2000


def fit_probe_head(model: vit.ViT, data: ImageDataset, ctx: RunContext, batch_size: int, seed: int) -> str:
    """Give a backbone without a classifier (DINOv2) a logistic-regression head on its own pooled features.

    Fitted on (up to 2,000) training images of the labelled set, so accuracy under masking is
    that of this linear readout. Returns the note saying so.
    """
    from sklearn.linear_model import LogisticRegression

    if not isinstance(model, vit.TimmViT):  # only timm publishes headless ViTs; a transformers ViT has its classifier
        raise UsageError(f"{type(model).__name__} has no head to fit a probe into")
    train = data.train.subset(PROBE_IMAGES, seed=seed)
    ctx.step(f"the model has no classifier: fitting a linear probe on {len(train)} training images")
    with torch.inference_mode():
        feats = torch.cat([model.classify(model.tokens(model.preprocess(b.to(ctx.device)))).float().cpu()
                           for b in train.images.split(batch_size)]).numpy()
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(feats, train.labels.numpy())
    weight, bias = torch.zeros(len(train.classes), feats.shape[1]), torch.zeros(len(train.classes))
    fitted = torch.as_tensor(probe.classes_)
    if len(fitted) == 2:  # scikit-learn keeps one row for two classes: logits (-z/2, z/2) give the same softmax
        row = torch.as_tensor(probe.coef_[0], dtype=torch.float32)
        weight[fitted] = torch.stack([-row / 2, row / 2])
        bias[fitted] = torch.tensor([-probe.intercept_[0] / 2, probe.intercept_[0] / 2], dtype=torch.float32)
    else:
        weight[fitted] = torch.as_tensor(probe.coef_, dtype=torch.float32)
        bias[fitted] = torch.as_tensor(probe.intercept_, dtype=torch.float32)
        bias[[c for c in range(len(train.classes)) if c not in set(fitted.tolist())]] = -1e4  # never seen: never
    model.set_head(weight, bias, train.classes)
    return (f"The model has no classification head (a self-supervised backbone), so its predictions come from a "
            f"logistic-regression probe on its pooled final features, fitted on {len(train)} training images of "
            f"{data.name}; accuracies are that linear readout's.")


def source_notes(cfg: ViTConfig, ctx: RunContext) -> list[str]:
    weights = ctx.sources.get("weights")
    out = [f"Model: {cfg.arch} through {'timm' if cfg.backend == 'timm' else 'Hugging Face transformers'}; "
           f"weights: {weights.description if isinstance(weights, WeightsInfo) else cfg.weights}."]
    if isinstance(weights, WeightsInfo) and weights.demo:
        out.append("Demo preset: no ImageNet weights offline, so atml trained this small ViT (patch 4 on 32x32 "
                   "upsampled digits, 64 patches + CLS) on digits 0-4 and the experiment runs on it; its numbers "
                   "describe that model, not DeiT-Small.")
    if isinstance(weights, WeightsInfo) and not weights.pretrained:
        out.append(RANDOM_WEIGHTS_NOTE)
    return out
