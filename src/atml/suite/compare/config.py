"""The comparisons' configs and presets, importable without torch (the CLI checks ``--set`` values with them before
it imports an experiment)."""

from __future__ import annotations

import dataclasses
from typing import Any

from atml.config import RunConfig, require_positive
from atml.errors import Key, Placeholder, UsageError
from atml.models.registry import DEIT_SMALL

DATA = ("cifar10", "cifar100", "digits", "folder", "imagenet", "generated-cifar10", "generated-cifar100",
        "rehearsal-cifar10")
"""The datasets the comparisons take (names of :data:`atml.data.factory.DATASETS`)."""

DEMO_MODELS = ("digits-resnet", "vit-digits")
"""The demo's stand-ins: atml's digits ResNet and digits ViT, both trained on digits 0-4 (cached)."""
FULL_MODELS = ("resnet152", DEIT_SMALL)


def split(spec: str, default_weights: str) -> tuple[str, str]:
    """``NAME@WEIGHTS`` -> (name, weights); a bare name takes ``default_weights``."""
    name, at, weights = spec.partition("@")
    if at and not weights:
        raise UsageError(f"models entry {spec!r} ends with @; write NAME@WEIGHTS (e.g. ViT-B-32@openai) or NAME")
    return name, weights or default_weights


@dataclasses.dataclass
class CompareConfig(RunConfig):
    models: tuple[str, ...] = FULL_MODELS
    """Registry names (``atml models``; any torchvision CNN, timm/NAME, open_clip model), each optionally
    NAME@WEIGHTS (e.g. ViT-B-32@openai); without @ a model takes --weights."""
    weights: str = "imagenet"
    """The weights of every model named without @: imagenet | random | digits (the demo's models) | a file."""
    data: str = "cifar10"
    """cifar10 | cifar100 | digits (classes 5-9, which the demo's models never saw) | folder (--data-dir) |
    imagenet (--data-dir, val/) | generated-cifar10 | generated-cifar100 (smoke) | rehearsal-cifar10 (timing)."""
    batch_size: int = 128
    amp: bool = True
    """bf16 autocast for the models' forwards on CUDA (ignored on CPU)."""

    def check_values(self) -> None:
        super().check_values()
        require_positive(self, "batch_size")
        if not self.models:
            raise UsageError("models=[] names no model; give at least one, e.g. ",
                             Key("models", ["resnet18", "vit-digits"]))
        twice = sorted({s for s in self.models if self.models.count(s) > 1})
        if twice:
            raise UsageError(f"models lists {', '.join(twice)} more than once; name each model (NAME or NAME@WEIGHTS) "
                             "once")
        for spec in self.models:
            self.model_weights(spec)

    def check_sources(self) -> None:
        from atml.models import factory
        from atml.suite import datasets

        super().check_sources()
        datasets.check(self, DATA)
        for spec in self.models:
            name, weights = self.model_weights(spec)
            factory.check_weights(factory.find(name).family, name, weights)

    def model_weights(self, spec: str) -> tuple[str, str]:
        """``NAME@WEIGHTS`` -> (name, weights); a bare name takes the run's ``weights``. A rehearsal (generated
        data, for timing) runs every model with random weights, whatever the full preset names."""
        name, weights = split(spec, self.weights)
        return name, "random" if self.data.startswith("rehearsal-") else weights


@dataclasses.dataclass
class CkaConfig(CompareConfig):
    images: int = 10000
    """Images of the held-out split to compare on (0: all); whole batches of batch_size only."""

    def check_values(self) -> None:
        super().check_values()
        if len(self.models) != 2:
            raise UsageError(f"compare.cka compares two models; models={list(self.models)} names {len(self.models)}: ",
                             Key("models", [Placeholder("A"), Placeholder("B")]))
        if self.images < 0:
            raise UsageError(f"images={self.images} is not valid; use a count >= 0 (0: the whole split)")
        if self.batch_size < 4:
            raise UsageError(f"batch_size={self.batch_size} is too small: the unbiased HSIC estimator needs at least "
                             "4 images per batch")


CKA_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"models": ["digits-resnet-small", "vit-digits"], "weights": "random", "data": "generated-cifar10",
              "images": 48, "batch_size": 16},
    "demo": {"models": list(DEMO_MODELS), "weights": "digits", "data": "digits", "offline": True,
             "images": 0, "batch_size": 64},
    "full": {"images": 10000, "batch_size": 128},
    "rehearsal": {"data": "rehearsal-cifar10", "weights": "random", "images": 10000, "batch_size": 128},
}


@dataclasses.dataclass
class ProbeConfig(CompareConfig):
    train_limit: int = 0
    """Training images for the probes (0: the whole split)."""
    val_limit: int = 0
    """Held-out images they are scored on (0: the whole split)."""
    probe_c: float = 1.0
    """Inverse L2 strength of the logistic regression (scikit-learn's C), on standardised features."""

    def check_values(self) -> None:
        super().check_values()
        if self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("train_limit and val_limit must be >= 0 (0 means all)")
        if not self.probe_c > 0:
            raise UsageError(f"probe_c={self.probe_c} is not valid; use a positive number")


PROBE_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"models": ["digits-resnet-small", "vit-digits"], "weights": "random", "data": "generated-cifar10",
              "batch_size": 32},
    "demo": {"models": ["digits-resnet", "digits-resnet-small", "vit-digits"], "weights": "digits",
             "data": "digits", "offline": True, "batch_size": 64},
    "full": {"models": [*FULL_MODELS, "ViT-B-32@openai"], "batch_size": 128},
    "rehearsal": {"models": [*FULL_MODELS, "ViT-B-32@openai"], "data": "rehearsal-cifar10",
                  "weights": "random", "batch_size": 128},
}

CAMS = ("gradcam", "gradcam++", "scorecam")
VIT_ONLY = ("cls_attention", "rollout")
METHODS = (*CAMS, *VIT_ONLY, "random")
"""compare.saliency's methods: the CAMs take any CNN or ViT, the attention maps ViTs only."""


@dataclasses.dataclass
class SaliencyConfig(CompareConfig):
    limit: int = 100
    """Held-out images of the dataset the maps are computed and scored on."""
    images: tuple[str, ...] = ()
    """Your image files or folders instead of the dataset's (any size; each model resizes them by its own rule);
    unreadable files stop the run unless skip_bad_images=true."""
    grid: int = 7
    """Deletion and insertion remove or reveal a grid x grid lattice of patches, one patch per step."""
    shown: int = 4
    """Images drawn in each model's image x method figure."""
    scorecam_batch: int = 0
    """Masked copies per forward in Score-CAM (one per channel of the target layer); 0: on a GPU as many as a quarter
    of its free memory holds (measured on one forward, the target layer's channels at most), 64 elsewhere."""
    methods: tuple[str, ...] = ()
    """The methods to run (default: every one a model takes): gradcam, gradcam++ (one backward per batch), scorecam
    (one forward per channel of the target layer for each image, twice with the sanity check: 2 x 512 forwards per
    image for ResNet-18's last stage, 2 x 2,048 for ResNet-50/152's, 2 x 384 for DeiT-S; by far the slowest),
    cls_attention, rollout (ViTs only). The random baseline always runs (every method is compared with it)."""

    def check_values(self) -> None:
        super().check_values()
        if self.limit < 1 or self.grid < 2 or self.shown < 0 or self.scorecam_batch < 0:
            raise UsageError("limit must be >= 1, scorecam_batch >= 0 (0: from the free memory), grid >= 2 and "
                             "shown >= 0")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UsageError(f"methods: {', '.join(unknown)} not known; valid: {', '.join(METHODS)}")

    def check_sources(self) -> None:
        from atml.models import factory

        super().check_sources()
        for spec in self.models:
            name = self.model_weights(spec)[0]
            family = factory.find(name).family
            if family not in ("cnn", "vit"):
                raise UsageError(f"compare.saliency explains classifiers: {name} is not a CNN or a ViT")
            takes = METHODS if family == "vit" else (*CAMS, "random")
            if self.methods and not [m for m in self.methods if m in takes and m != "random"]:
                raise UsageError(f"methods={list(self.methods)} gives {name} no method to score (a {family.upper()} "
                                 f"takes {', '.join(m for m in takes if m != 'random')})")


SALIENCY_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"models": ["digits-resnet-small", "vit-digits"], "weights": "random", "data": "generated-cifar10",
              "limit": 8, "grid": 4, "shown": 2, "batch_size": 8, "scorecam_batch": 64},
    "demo": {"models": list(DEMO_MODELS), "weights": "digits", "data": "digits", "offline": True,
             "limit": 32, "grid": 4, "shown": 4, "batch_size": 32},
    "full": {"limit": 100, "grid": 7, "shown": 4, "batch_size": 32},
    "rehearsal": {"data": "rehearsal-cifar10", "weights": "random", "limit": 100, "grid": 7, "batch_size": 32},
}
