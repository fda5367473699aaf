"""The demo's stand-in for ImageNet weights: a small ResNet pretrained on digits 0-4.

As in Yosinski et al. 2014, the source task (digits 0-4) and the target task (digits
5-9) share no class, so transfer measures how general the learned features are. This module
trains them (:func:`train`); :mod:`atml.pretrained` caches the result by its recipe in
``$ATML_CACHE/pretrained`` (written once, atomically, under a lock), where the model factory
reads it like any weights file.
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
from atml.models import factory
from atml.models.preprocess import Preprocess
from atml.results import counted
from atml.train.loop import Batches, Fit, MemoryRecorder, fit

RECIPE_VERSION = 3


@dataclasses.dataclass(frozen=True)
class Recipe:
    arch: str = "digits-resnet"
    epochs: int = 8
    resolution: int = 32
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def recipe(name: str, *, seed: int, epochs: int | None) -> Recipe:
    """The recipe for the digits ResNet ``name`` (``digits-resnet`` or ``digits-resnet-small``)."""
    return Recipe(arch=name, seed=seed, **({"epochs": epochs} if epochs is not None else {}))


def train(recipe: Recipe, device: torch.device, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The pretrained body's state dict and its ``meta``: held-out accuracy, recipe key, description."""
    say(f"demo backbone: pretraining {recipe.arch} on digits 0-4 ({counted(recipe.epochs, 'epoch')})")
    saved = _pretrain(recipe, device, progress, say)
    saved["meta"]["description"] = (
        f"atml {recipe.arch} pretrained by atml on scikit-learn digits 0-4 at {recipe.resolution}px ({recipe.epochs} "
        f"epochs, seed {recipe.seed}; held-out acc {saved['meta']['val_acc']:.3f}); stands in for ImageNet weights "
        "in the demo")
    return saved


def _pretrain(recipe: Recipe, device: torch.device, progress: bool,
              say: Callable[[str], None]) -> dict[str, Any]:
    torch.manual_seed(recipe.seed)
    data = digits.load(digits.PRETRAIN_CLASSES, seed=recipe.seed)
    backbone = factory.create(recipe.arch, "random", family="cnn", num_classes=len(digits.PRETRAIN_CLASSES))
    prep = Preprocess(backbone.preprocessing, recipe.resolution, channels_last=True)
    model = torch.nn.Sequential(prep, backbone.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs)
    recorder = MemoryRecorder()
    fit(Fit(model, optimizer,
                   Batches((data.train.images, data.train.labels), recipe.batch_size, shuffle=True, seed=recipe.seed,
                           **UNSHARDED),
                   Batches((data.val.images, data.val.labels), 256, **UNSHARDED), recipe.epochs, device, recorder,
                   stage="pretrain", scheduler=scheduler, progress=progress, say=say))
    recalibrate_bn(model, data.train.images, device)
    val_acc = _accuracy(model, data.val.images, data.val.labels, device)
    state = {k: v.detach().cpu() for k, v in backbone.model.body.state_dict().items()}
    return {"state_dict": state, "meta": {"val_acc": float(val_acc), "recipe": recipe.key()}}


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 128) -> None:
    """Replace BatchNorm running statistics by exact averages over ``images`` ("precise BN").

    With few steps per epoch the exponential running averages lag far behind the weights,
    so a short pretraining would otherwise evaluate with stale statistics.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
    model.train()
    for k, batch in enumerate(images.split(batch_size)):
        for bn in bns:  # 1/(k+1): the cumulative average (momentum=None), without BatchNorm reading its count back
            bn.momentum = 1.0 / (k + 1)
        model(batch.to(device))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.eval()


@torch.no_grad()
def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    model.eval()
    preds = torch.cat([model(b.to(device)).argmax(1).cpu() for b in images.split(256)])
    return float((preds == labels).float().mean())
