"""The demo's stand-in for ImageNet DeiT weights: a small ViT trained by atml on digits 0-4.

The ``vit-digits`` ViT (patch 4 on 32x32 upsampled digits, 8x8 = 64 patches + CLS,
4 blocks, width 96) is trained with the shared loop, random shifts, AdamW and a cosine
schedule; :mod:`atml.pretrained` caches it by its recipe in ``$ATML_CACHE/pretrained``, where
every ViT experiment of the demo preset reads it through the model factory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import torch

from atml.data import digits
from atml.distributed import UNSHARDED
from atml.models import factory, vit
from atml.results import counted
from atml.train.augment import Augment
from atml.train.loop import Batches, Fit, MemoryRecorder, fit

RECIPE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def recipe(name: str, *, seed: int, epochs: int | None) -> Recipe:
    """The recipe for ``vit-digits`` (the only model it trains)."""
    return Recipe(seed=seed, **({"epochs": epochs} if epochs is not None else {}))


def train(recipe: Recipe, device: torch.device, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The trained timm state dict and its ``meta``: held-out accuracy, recipe key, description, classes."""
    say(f"demo ViT: training vit-digits on digits 0-4 ({counted(recipe.epochs, 'epoch')})")
    saved = _train(recipe, device, progress, say)
    saved["meta"]["description"] = (
        f"atml vit-digits (patch 4, 32px, 4 blocks, width 96) trained by atml on scikit-learn digits 0-4 "
        f"({counted(recipe.epochs, 'epoch')}, seed {recipe.seed}; held-out acc {saved['meta']['val_acc']:.3f}); "
        "stands in for ImageNet DeiT weights in the demo")
    return saved


class _Trainable(torch.nn.Module):
    def __init__(self, model: vit.ViT) -> None:
        super().__init__()
        self.model = model
        self.augment = Augment(hflip=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.model(self.augment(self.model.preprocess(images)))
        return result


def _train(recipe: Recipe, device: torch.device, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    torch.manual_seed(recipe.seed)
    data = digits.load(digits.PRETRAIN_CLASSES, seed=recipe.seed)
    model = factory.create("vit-digits", "random", family="vit", num_classes=len(digits.PRETRAIN_CLASSES),
                           classes=data.train.classes).model
    trainable = _Trainable(model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs)
    records = fit(Fit(trainable, optimizer,
                      Batches((data.train.images, data.train.labels), recipe.batch_size, shuffle=True, seed=recipe.seed,
                              **UNSHARDED),
                      Batches((data.val.images, data.val.labels), 256, **UNSHARDED), recipe.epochs, device,
                      MemoryRecorder(),
                      stage="pretrain-vit", scheduler=scheduler, progress=progress, say=say))
    val_acc = records.last("val", "acc")
    state = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
    return {"state_dict": state, "meta": {"val_acc": float(val_acc), "recipe": recipe.key(),
                                          "classes": list(data.train.classes)}}
