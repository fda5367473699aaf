"""The demo's stand-in for ImageNet DeiT weights: a small ViT trained by atml on digits 0-4.

The ``vit-digits`` ViT (patch 4 on 32x32 upsampled digits, 8x8 = 64 patches + CLS,
4 blocks, width 96) is trained with the shared loop, random shifts, AdamW and a cosine
schedule, then cached by its recipe in ``$ATML_CACHE/pretrained`` (written atomically)
and reused by every ViT experiment of the demo preset.
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
from atml.models import vit
from atml.models.weights import WeightsInfo
from atml.storage import sha256sum
from atml.train.augment import Augment
from atml.train.loop import Batches, Fit, MemoryRecorder, fit
from atml.train.pretrain import cached_training

RECIPE_VERSION = 1


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


def digits_vit(recipe: Recipe, *, device: torch.device, progress: bool = False,
               say: Callable[[str], None] = print) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """The trained timm state dict (cached, or trained now) and what to record about it."""
    saved, path = cached_training(
        f"vit-digits-{recipe.key()}", lambda: _train(recipe, device, progress, say), say=say,
        using="demo ViT: using cached digits 0-4 vit-digits",
        training=f"demo ViT: training vit-digits on digits 0-4 ({recipe.epochs} epochs)")
    meta = saved["meta"]
    description = (f"atml vit-digits (patch 4, 32px, 4 blocks, width 96) trained by atml on scikit-learn digits 0-4 "
                   f"({recipe.epochs} epochs, seed {recipe.seed}; held-out acc {meta['val_acc']:.3f}); stands in "
                   "for ImageNet DeiT weights in the demo")
    info = WeightsInfo("digits", description, str(path), sha256sum(path), source_val_acc=float(meta["val_acc"]))
    return saved["state_dict"], info


class _Trainable(torch.nn.Module):
    def __init__(self, model: vit.ViT) -> None:
        super().__init__()
        self.model = model
        self.augment = Augment(hflip=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.augment(self.model.preprocess(images)))


def _train(recipe: Recipe, device: torch.device, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    torch.manual_seed(recipe.seed)
    data = digits.load(digits.PRETRAIN_CLASSES, seed=recipe.seed)
    model = vit.build("vit-digits", "random", num_classes=len(digits.PRETRAIN_CLASSES),
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
    return {"state_dict": state, "meta": {"val_acc": float(val_acc), "recipe": recipe.key()}}
