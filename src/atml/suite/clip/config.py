"""The CLIP experiments' configs and presets, importable without torch (the CLI checks ``--set`` values with them
before it imports an experiment)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from atml.config import RunConfig, require_positive
from atml.errors import UsageError

DATA = ("stl10", "cifar10", "cifar100", "digits", "folder", "generated-stl10", "generated-cifar100",
        "rehearsal-stl10")
"""The datasets this family takes (names of :data:`atml.data.factory.DATASETS`)."""

DEMO_CLIP_EPOCHS = 20
"""The demo CLIP's training epochs (``atml.train.clip_recipe.Recipe.epochs``; a test keeps the two equal)."""


@dataclasses.dataclass
class ClipConfig(RunConfig):
    ALIASES: typing.ClassVar[dict[str, str]] = {"model": "arch", "pretrained": "weights"}
    """open_clip's own words: --set model=ViT-B-16 --set pretrained=laion2b_s34b_b88k."""

    arch: str = "ViT-B-32"
    """Any open_clip model (ViT-B-32, ViT-B-16, RN50, ViT-B-16-SigLIP, ...; also --set model=...) |
    clip-digits (the demo's tiny CLIP)."""
    weights: str = "openai"
    """One of open_clip's pretrained tags for the arch (openai, laion2b_s34b_b88k, webli, ...; also
    --set pretrained=...) | random | digits (demo) | path to an open_clip state dict."""
    data: str = "stl10"
    """stl10 (official binaries) | cifar10 | cifar100 | folder (--data-dir DIR, ImageFolder layout; prompts use the
    folder names) | digits (demo) | generated-stl10 | generated-cifar100 (smoke) | rehearsal-stl10 (timing only)."""
    batch_size: int = 128
    test_limit: int = 0
    """Test images used (0: all 8,000 of STL-10)."""
    train_limit: int = 0
    """Training images used where a split is fitted (clip.align; 0: all)."""
    train_epochs: int = DEMO_CLIP_EPOCHS
    """Epochs of the demo CLIP's training (weights=digits)."""
    amp: bool = True
    """bf16 autocast for the encoders on CUDA (ignored on CPU)."""

    def check_values(self) -> None:
        super().check_values()
        require_positive(self, "batch_size", "train_epochs")
        if self.test_limit < 0 or self.train_limit < 0:
            raise UsageError("test_limit and train_limit must be >= 0 (0 means all)")

    def check_sources(self) -> None:
        from atml.models import clip, factory
        from atml.suite import datasets

        super().check_sources()
        clip.check_arch(self.arch)
        factory.check_weights("clip", self.arch, self.weights)
        datasets.check(self, DATA)


@dataclasses.dataclass
class GapConfig(ClipConfig):
    per_class: int = 10
    """Test images per class in the balanced sample (10 classes: 100 images)."""
    random_init: bool = True
    """Also measure the gap of a randomly initialised model of the same architecture."""

    def check_values(self) -> None:
        super().check_values()
        if self.per_class < 2:
            raise UsageError(f"per_class={self.per_class} is not valid; use an integer >= 2")


SMOKE = {"arch": "clip-digits", "weights": "random", "data": "generated-stl10", "batch_size": 32}
DEMO = {"offline": True, "arch": "clip-digits", "weights": "digits", "data": "digits", "batch_size": 256}
REHEARSAL = {"data": "rehearsal-stl10", "weights": "random"}  # the full preset on generated data (timing)

ZEROSHOT_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": SMOKE, "demo": DEMO,
    "full": {},
    "rehearsal": REHEARSAL,
}
GAP_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**SMOKE, "per_class": 3},
    "demo": DEMO,
    "full": {},
    "rehearsal": REHEARSAL,
}
ALIGN_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**SMOKE, "per_class": 3},
    "demo": DEMO,
    "full": {},
    "rehearsal": REHEARSAL,
}
