"""The ViT experiments' configs and presets, importable without torch (the CLI checks ``--set`` values with them
before it imports an experiment)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from atml.config import CompileMode, RunConfig, require_positive
from atml.errors import UsageError
from atml.models.registry import DEIT_SMALL, TIMM, TRANSFORMERS_FOLDER, Backend

DATA = ("cifar10", "cifar100", "digits", "folder", "imagenet", "generated-cifar10", "generated-cifar100",
        "rehearsal-cifar10")
"""The datasets this family takes (names of :data:`atml.data.factory.DATASETS`)."""

DEMO_VIT_EPOCHS = 30
"""The demo ViT's training epochs (``atml.train.vit_recipe.Recipe.epochs``; a test keeps the two equal)."""


@dataclasses.dataclass
class ViTConfig(RunConfig):
    arch: str = DEIT_SMALL
    """deit_small_patch16_224 | vit-digits (the demo's small ViT) | timm/NAME for any timm ViT with a class token
    (timm/vit_small_patch14_dinov2, timm/vit_small_patch14_reg4_dinov2, timm/vit_base_patch16_224, ...) |
    auto (backend=hf: the shape of the transformers folder given as weights)."""
    backend: Backend = "timm"
    """timm | hf (Hugging Face transformers; pip install 'atml[hf]')."""
    weights: str = "imagenet"
    """imagenet (DeiT's release; for timm/NAME: timm's default weights of that model) | random |
    digits (demo) | a state dict file | a transformers folder."""
    input_size: int = 0
    """timm/NAME ViTs: build the model at this input size (px, a multiple of its patch; position embeddings
    resampled); 0: the model's own (DINOv2: 518)."""
    data: str = "cifar10"
    """cifar10 | cifar100 | folder (--data-dir DIR, ImageFolder layout) | digits | generated-cifar10 |
    generated-cifar100 (smoke) | rehearsal-cifar10 (timing only): the labelled set."""
    batch_size: int = 64
    train_epochs: int = DEMO_VIT_EPOCHS
    """Epochs of the demo ViT's training on digits 0-4 (weights=digits)."""
    compile: CompileMode = "off"
    """torch.compile the frozen feature pass (vit.pooling): off | default | reduce-overhead | max-autotune."""

    def check_values(self) -> None:
        super().check_values()
        if self.input_size and not self.arch.startswith(TIMM):
            raise UsageError(f"input_size={self.input_size} applies to timm/NAME archs only (arch={self.arch} has a "
                             "fixed size); leave it at 0")
        if self.input_size < 0:
            raise UsageError(f"input_size={self.input_size} is not valid; use a size in px, or 0 for the model's own")
        require_positive(self, "batch_size", "train_epochs")

    def check_sources(self) -> None:
        from atml.models import factory, vit
        from atml.suite import datasets

        super().check_sources()
        vit.check_arch(self.arch, self.backend)
        datasets.check(self, DATA)
        if self.arch != TRANSFORMERS_FOLDER:  # a transformers folder (backend=hf): its weights are the folder
            factory.check_weights("vit", self.arch, self.weights)


SMOKE = {"arch": DEIT_SMALL, "weights": "random"}
SMOKE_SMALL = {"arch": "vit-digits", "weights": "random", "data": "digits"}
DEMO = {"offline": True, "arch": "vit-digits", "weights": "digits", "data": "digits"}
REHEARSAL = {"data": "rehearsal-cifar10", "weights": "random"}  # the full preset on generated data (timing)



@dataclasses.dataclass
class AttentionConfig(ViTConfig):
    images: tuple[str, ...] = ()
    """Image files or folders (default: ImageNet models look at the sample photos, unless data=folder or
    data=imagenet names a folder; other models at held-out images of their dataset)."""
    count: int = 3
    """Images drawn with their maps."""
    stats_images: int = 64
    """Held-out images the head statistics average over (ImageNet models: the photos)."""

    def check_values(self) -> None:
        super().check_values()
        require = self.count >= 1 and self.stats_images >= 1
        if not require:
            raise UsageError("count and stats_images must be >= 1")


ATTENTION_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**SMOKE, "data": "digits"},
    "demo": {**DEMO, "stats_images": 128},
    "full": {},
    "rehearsal": REHEARSAL,
}


@dataclasses.dataclass
class ClassifyConfig(ViTConfig):
    images: tuple[str, ...] = ()
    """Image files or folders to classify (default: scikit-image's sample photos)."""
    top_k: int = 5
    count: int = 3
    """Held-out images shown when the model is not an ImageNet classifier (the demo's digits ViT)."""

    def check_values(self) -> None:
        super().check_values()
        if not 1 <= self.top_k <= 10 or not 1 <= self.count <= 12:
            raise UsageError("top_k must be in [1, 10] and count in [1, 12]")


CLASSIFY_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**SMOKE, "data": "digits"},
    "demo": DEMO,
    "full": {},
    "rehearsal": REHEARSAL,
}


Fill = Literal["mean", "zero", "drop"]
"""How vit.masking fills a masked patch."""
FILLS: tuple[Fill, ...] = typing.get_args(Fill)


@dataclasses.dataclass
class MaskingConfig(ViTConfig):
    ratios: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75)
    seeds: int = 3
    """Random masks drawn per ratio (mean and spread reported)."""
    limit: int = 500
    """Validation images evaluated (0: all)."""
    fills: tuple[Fill, ...] = FILLS

    def check_values(self) -> None:
        super().check_values()
        if not self.ratios or any(not 0 <= r < 1 for r in self.ratios):
            raise UsageError(f"ratios={list(self.ratios)} is not valid; use fractions in [0, 1)")
        if not self.fills:
            raise UsageError(f"fills={list(self.fills)} is not valid; choose from {', '.join(FILLS)}")
        require_seeds = self.seeds >= 1 and self.limit >= 0
        if not require_seeds:
            raise UsageError("seeds must be >= 1 and limit >= 0")


MASKING_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**SMOKE_SMALL, "ratios": (0.0, 0.5), "seeds": 2, "limit": 40},
    "demo": {**DEMO, "limit": 0},
    "full": {"limit": 500},
    "rehearsal": {**REHEARSAL, "limit": 500},
}


@dataclasses.dataclass
class PoolingConfig(ViTConfig):
    epochs: int = 10
    lr: float = 1e-3
    train_limit: int = 0
    val_limit: int = 0

    def check_values(self) -> None:
        super().check_values()
        if self.epochs < 1 or not self.lr > 0 or self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("epochs must be >= 1, lr > 0, train_limit and val_limit >= 0")


POOLING_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**SMOKE_SMALL, "data": "generated-cifar10", "epochs": 2, "batch_size": 32},
    "demo": {**DEMO, "epochs": 60, "batch_size": 64, "lr": 1e-2},
    "full": {"epochs": 10, "batch_size": 128},
    "rehearsal": {**REHEARSAL, "epochs": 10, "batch_size": 128},
}
