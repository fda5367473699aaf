"""The ResNet experiments' configs and presets, importable without torch (the CLI checks ``--set`` values with them
before it imports an experiment)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from atml.config import CompileMode, RunConfig, require_positive
from atml.errors import UsageError
from atml.models.registry import RANDOM_FILE

DATA = ("cifar10", "cifar100", "digits", "folder", "imagenet", "generated-cifar10", "generated-cifar100",
        "rehearsal-cifar10")
"""The datasets this family takes (names of :data:`atml.data.factory.DATASETS`)."""


@dataclasses.dataclass
class ResNetConfig(RunConfig):
    """What every ResNet experiment shares: data, backbone, optimisation and speed switches."""

    data: str = "cifar10"
    """cifar10 | cifar100 (official batches) | folder (--data-dir DIR: DIR/train/CLASS/*.jpg, DIR/val/...) |
    imagenet (--data-dir DIR: DIR/val/<wnid>/*.JPEG; resnet.head scores the weights' own ImageNet head on it) |
    digits (scikit-learn, classes 5-9) | generated-cifar10 | generated-cifar100 (smoke) |
    rehearsal-cifar10 (generated, CIFAR-10's real counts: timing only)."""
    arch: str = "resnet152"
    """resnet152 | resnet50 | resnet18 | any torchvision CNN (convnext_tiny, efficientnet_b0, ...) |
    timm/NAME for any timm CNN (timm/convnext_tiny, timm/efficientnet_b0, ...) | digits-resnet | digits-resnet-small."""
    weights: str = "imagenet"
    """imagenet (torchvision's default, or timm's default weights from the Hugging Face hub) | imagenet-v1 |
    random | digits (demo) | path to a state dict."""
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    """Adam learning rate for the head (and for trained blocks, times ``backbone_lr_scale``)."""
    backbone_lr_scale: float = 0.1
    """Learning-rate factor for backbone blocks that are trained (fine-tuning)."""
    augment: bool = False
    """Random crop (and flip, if ``hflip``) for cells that train backbone blocks."""
    hflip: bool = True
    """Horizontal flips in the augmentation (off for digits, where a flip changes the class)."""
    weight_decay: float = 0.0
    feature_cache: bool = True
    """Run the frozen backbone once per resolution and train the head on cached features."""
    train_limit: int = 0
    """Use at most this many training images (0: all)."""
    val_limit: int = 0
    channels_last: bool = True
    amp: bool = True
    """bf16 autocast for the backbone on CUDA (ignored on CPU)."""
    compile: CompileMode = "off"
    """torch.compile the frozen backbone's feature pass: off | default | reduce-overhead | max-autotune."""
    pretrain_epochs: int = 8
    """Epochs of the digits 0-4 pretraining behind weights=digits."""

    extra_weights: typing.ClassVar[tuple[str, ...]] = ()
    """Weight names an experiment accepts besides the arch's own (resnet.transfer: pretrained-file)."""

    def check_values(self) -> None:
        super().check_values()
        require_positive(self, "epochs", "batch_size", "pretrain_epochs")
        if not self.lr > 0 or self.weight_decay < 0 or not self.backbone_lr_scale > 0:
            raise UsageError("lr and backbone_lr_scale must be > 0 and weight_decay >= 0")
        if self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("train_limit and val_limit must be >= 0 (0 means all)")

    def check_sources(self) -> None:
        from atml.models import cnn, factory, resnet
        from atml.suite import datasets

        super().check_sources()
        datasets.check(self, DATA)
        cnn.check_arch(self.arch, resnet.ARCHS)
        factory.check_weights("cnn", self.arch, self.weights, self.extra_weights)


@dataclasses.dataclass
class HeadConfig(ResNetConfig):
    resolutions: tuple[int, ...] = (32, 64, 128, 224)
    """Input sizes the images are resized to; one head is trained per size."""

    def check_values(self) -> None:
        super().check_values()
        if not self.resolutions or any(r < 4 or r > 1024 for r in self.resolutions):
            raise UsageError(f"resolutions={list(self.resolutions)} is not valid; use sizes in [4, 1024]")


HEAD_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-cifar10", "arch": "resnet18", "weights": "random", "resolutions": (16, 32),
              "epochs": 2, "batch_size": 32},
    "demo": {"offline": True, "data": "digits", "arch": "digits-resnet", "weights": "digits",
             "resolutions": (8, 16, 32),
             "epochs": 20, "batch_size": 64, "lr": 3e-3},
    "full": {},
    "rehearsal": {"data": "rehearsal-cifar10", "weights": "random"},
}


@dataclasses.dataclass
class SkipConfig(ResNetConfig):
    resolution: int = 224
    blocks: tuple[str, ...] = ()
    """Blocks whose skip is removed, e.g. [layer3.1]; empty: one shape-preserving block in layer2, 3 and 4."""

    def check_values(self) -> None:
        super().check_values()
        if not 4 <= self.resolution <= 1024:
            raise UsageError(f"resolution={self.resolution} is not valid; use a size in [4, 1024]")

    def check_sources(self) -> None:
        from atml.models import resnet

        super().check_sources()
        if self.arch not in resnet.ARCHS:
            raise UsageError(f"resnet.skip removes the skip connections of ResNet blocks, so it takes ResNets only; "
                             f"arch={self.arch!r} is not one. Choose one of {', '.join(resnet.ARCHS)}")


SKIP_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-cifar10", "arch": "resnet50", "weights": "random", "resolution": 32,
              "epochs": 2, "batch_size": 32},
    "demo": {"offline": True, "data": "digits", "arch": "digits-resnet", "weights": "digits", "resolution": 32,
             "epochs": 8, "batch_size": 64, "lr": 3e-3, "hflip": False},
    "full": {"epochs": 5},
    "rehearsal": {"epochs": 5, "data": "rehearsal-cifar10", "weights": "random"},
}


@dataclasses.dataclass
class FeaturesConfig(ResNetConfig):
    resolution: int = 224
    per_class: int = 100
    """Validation images per class in the sample."""
    compare_arch: str = "resnet18"
    """A second architecture measured the same way, any arch accepts ('' to skip)."""

    def check_values(self) -> None:
        super().check_values()
        if self.per_class < 2:
            raise UsageError(f"per_class={self.per_class} is not valid; use an integer >= 2")

    def check_sources(self) -> None:
        from atml.models import cnn, resnet

        super().check_sources()
        if self.compare_arch:
            try:
                cnn.check_arch(self.compare_arch, resnet.ARCHS)
            except UsageError as err:
                raise UsageError(str(err).replace("arch=", "compare_arch=", 1)) from None


FEATURES_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-cifar10", "arch": "resnet50", "weights": "random", "resolution": 32,
              "per_class": 5, "compare_arch": "resnet18", "batch_size": 32},
    "demo": {"offline": True, "data": "digits", "arch": "digits-resnet", "weights": "digits", "resolution": 32,
             "per_class": 60, "compare_arch": "digits-resnet-small", "batch_size": 128},
    "full": {},
    "rehearsal": {"data": "rehearsal-cifar10", "weights": "random"},
}

Cell = Literal["pretrained:head", "pretrained:last", "pretrained:full", "random:head", "random:last", "random:full"]
"""One cell of resnet.transfer's grid: how the backbone starts, then what is trained."""
ALL_CELLS: tuple[Cell, ...] = typing.get_args(Cell)


@dataclasses.dataclass
class TransferConfig(ResNetConfig):
    resolution: int = 224
    cells: tuple[Cell, ...] = ALL_CELLS
    """Which cells of the grid to run, as init:regime (init: pretrained|random; regime: head|last|full)."""
    augment: bool = True

    extra_weights: typing.ClassVar[tuple[str, ...]] = (RANDOM_FILE,)

    def check_values(self) -> None:
        super().check_values()
        if not self.cells:
            raise UsageError(f"cells={list(self.cells)} is not valid; choose from {', '.join(ALL_CELLS)}")
        if self.weights == "random":
            raise UsageError("resnet.transfer compares pretrained with random weights: set weights to a pretrained "
                             "source (imagenet, digits or a file)")


TRANSFER_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-cifar10", "arch": "resnet18", "weights": "pretrained-file", "resolution": 32,
              "epochs": 2, "batch_size": 32},
    "demo": {"offline": True, "data": "digits", "arch": "digits-resnet", "weights": "digits", "resolution": 32,
             "epochs": 5, "batch_size": 64, "lr": 3e-3, "hflip": False},
    "full": {"epochs": 10},
    "rehearsal": {"epochs": 10, "data": "rehearsal-cifar10", "weights": "pretrained-file"},
}
