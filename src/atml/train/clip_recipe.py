"""The demo's stand-in for OpenAI's CLIP: a tiny CLIP trained by atml on captioned digits.

The model is an ``open_clip.CLIP`` (vision: patch 8 on 32x32, 3 blocks; text: 2 blocks
over open_clip's own BPE tokens), trained with open_clip's ``ClipLoss`` on scikit-learn's
digits. Each image is paired, anew every step, with a caption made from a random
template and its digit's name ("a photo of the number seven."). Digits of all ten
classes are used, split 70/30; the zero-shot experiments evaluate on the held-out 30%
with prompts, never with a trained classifier head. Cached by recipe in
``$ATML_CACHE/pretrained``.
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
from atml.models import clip, factory
from atml.results import counted
from atml.train.augment import Augment
from atml.train.loop import Batches, Fit, MemoryRecorder, StepOutput, fit

RECIPE_VERSION = 2
ALL_DIGITS = tuple(range(10))
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = ("a photo of the number {}.", "a handwritten {}.", "the digit {}.", "a scan of a handwritten {}.",
                   "a blurry {}.", "a drawing of the number {}.")


@dataclasses.dataclass(frozen=True)
class Recipe:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def recipe(name: str, *, seed: int, epochs: int | None) -> Recipe:
    """The recipe for ``clip-digits`` (the only model it trains)."""
    return Recipe(seed=seed, **({"epochs": epochs} if epochs is not None else {}))


def train(recipe: Recipe, device: torch.device, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The trained open_clip state dict and its ``meta``: held-out zero-shot accuracy, recipe key, description."""
    say(f"demo CLIP: training the tiny CLIP on captioned digits ({counted(recipe.epochs, 'epoch')})")
    saved = _train(recipe, device, progress, say)
    saved["meta"]["description"] = (
        f"atml clip-digits (open_clip.CLIP: ViT patch 8 at 32px, 3 blocks; text 2 blocks; 64-d) trained by atml with "
        f"open_clip's ClipLoss on captioned scikit-learn digits 0-9 ("
        f"{counted(recipe.epochs, 'epoch')}, seed {recipe.seed}; "
        f"held-out zero-shot acc {saved['meta']['val_acc']:.3f}); stands in for OpenAI's CLIP")
    return saved


class ContrastiveStep:
    """open_clip's ClipLoss on (image, caption) pairs; accuracy = zero-shot with the first template."""

    def __init__(self, model: clip.CLIPModel, device: torch.device) -> None:
        import open_clip

        self.loss = open_clip.ClipLoss()
        captions = [t.format(w) for w in WORDS for t in TRAIN_TEMPLATES]
        self.tokens = model.tokenize(captions).view(len(WORDS), len(TRAIN_TEMPLATES), -1).to(device)
        self.augment = Augment(hflip=False).to(device)

    def __call__(self, model: Any, batch: tuple[torch.Tensor, ...]) -> StepOutput:
        images, labels = batch
        x = model.preprocess(images)
        self.augment.train(model.training)
        x = self.augment(x)
        pick = torch.randint(0, len(TRAIN_TEMPLATES), (len(labels),)).to(labels.device)
        img = model.model.encode_image(x, normalize=True)
        txt = model.model.encode_text(self.tokens[labels, pick], normalize=True)
        scale = model.model.logit_scale.exp()
        loss = self.loss(img, txt, scale)
        classes = model.model.encode_text(self.tokens[:, 0], normalize=True)
        acc = ((img @ classes.T).argmax(1) == labels).float().mean()
        return StepOutput(loss, {"acc": acc})


def _train(recipe: Recipe, device: torch.device, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    torch.manual_seed(recipe.seed)
    data = digits.load(ALL_DIGITS, seed=recipe.seed)
    model = factory.create("clip-digits", "random", family="clip", seed=recipe.seed).model
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs)
    records = fit(Fit(model, optimizer,
                      Batches((data.train.images, data.train.labels), recipe.batch_size, shuffle=True, seed=recipe.seed,
                              **UNSHARDED),
                      Batches((data.val.images, data.val.labels), 512, **UNSHARDED), recipe.epochs, device,
                      MemoryRecorder(),
                      stage="pretrain-clip", step=ContrastiveStep(model, device), scheduler=scheduler,
                      progress=progress, say=say))
    val_acc = records.last("val", "acc")
    state = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
    return {"state_dict": state, "meta": {"val_acc": float(val_acc), "recipe": recipe.key()}}
