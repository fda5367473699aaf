"""What the ``compare.*`` experiments share: a list of models (any registry name, each with its weights), built
through the model factory at their own preprocessing, and one labelled dataset they all see.

``--set models=[A,B,...]`` takes names as ``atml models`` lists them (atml's entries, any torchvision CNN,
``timm/NAME``, any open_clip model), each optionally ``NAME@WEIGHTS``; without ``@`` a model gets the run's
``--weights``.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from atml.config import RunConfig, require_positive
from atml.data import ImageDataset, digits
from atml.errors import UsageError
from atml.models import factory
from atml.models.preprocess import Preprocess
from atml.models.types import Built
from atml.provenance import RANDOM_WEIGHTS_NOTE
from atml.runner import RunContext
from atml.suite import datasets

DATA = ("cifar10", "cifar100", "digits", "folder", "imagenet", "generated-cifar10", "generated-cifar100",
        "rehearsal-cifar10")
"""The datasets the comparisons take (names of :data:`atml.data.factory.DATASETS`)."""

DEMO_MODELS = ("digits-resnet", "vit-digits")
"""The demo's stand-ins: atml's digits ResNet and digits ViT, both trained on digits 0-4 (cached)."""
FULL_MODELS = ("resnet152", "deit_small_patch16_224")


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

    def validate(self) -> None:
        super().validate()
        datasets.check(self, DATA)
        require_positive(self, "batch_size")
        if not self.models:
            raise UsageError("models=[] names no model; give at least one, e.g. --set models=[resnet18,vit-digits]")
        twice = sorted({s for s in self.models if self.models.count(s) > 1})
        if twice:
            raise UsageError(f"models lists {', '.join(twice)} more than once; name each model (NAME or NAME@WEIGHTS) "
                             "once")
        for spec in self.models:
            name, weights = self.model_weights(spec)
            entry = factory.find(name)
            factory.check_weights(entry.family, name, weights)

    def model_weights(self, spec: str) -> tuple[str, str]:
        """``NAME@WEIGHTS`` -> (name, weights); a bare name takes the run's ``weights``. A rehearsal (generated
        data, for timing) runs every model with random weights, whatever the full preset names."""
        name, weights = split(spec, self.weights)
        return name, "random" if self.data.startswith("rehearsal-") else weights


def split(spec: str, default_weights: str) -> tuple[str, str]:
    """``NAME@WEIGHTS`` -> (name, weights); a bare name takes ``default_weights``."""
    name, at, weights = spec.partition("@")
    if at and not weights:
        raise UsageError(f"models entry {spec!r} ends with @; write NAME@WEIGHTS (e.g. ViT-B-32@openai) or NAME")
    return name, weights or default_weights


@dataclasses.dataclass
class Subject:
    """One model of a comparison: its label in tables and figures, how it was built, and on what device."""

    label: str
    name: str
    weights: str
    family: str
    built: Built[nn.Module]

    @property
    def model(self) -> nn.Module:
        return self.built.model

    @property
    def preprocess(self) -> Preprocess:
        return self.built.preprocess

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_models(cfg: CompareConfig, ctx: RunContext, *, keep_head: bool = False) -> list[Subject]:
    """Every model of ``cfg.models`` through the factory, in eval mode on the run's device; recorded in env.json.
    ``keep_head``: a CNN keeps the classifier its weights came with (``Built.pretrained_head``)."""
    out = []
    for i, spec in enumerate(cfg.models):
        name, weights = cfg.model_weights(spec)
        entry = factory.find(name)
        recipe = ctx.pretrained(name, weights, family=entry.family, epochs=None, seed=cfg.seed)
        built = factory.create(name, weights, family=entry.family, num_classes=10, offline=ctx.offline,
                               keep_head=keep_head, recipe=recipe)
        built.model.to(ctx.device).eval()
        built.preprocess.to(ctx.device)
        ctx.record_source(f"weights_{i}", dataclasses.replace(built.info, model=name))
        out.append(Subject(spec, name, weights, entry.family, built))  # labelled as the user named it
    return out


def load_data(cfg: CompareConfig, ctx: RunContext, models: list[Subject], *, limits: tuple[int, int] = (0, 0),
              digit_classes: tuple[int, ...] = digits.TRANSFER_CLASSES) -> ImageDataset:
    """The labelled set every model sees; image files (a folder, ImageNet) decoded once for all the models
    (:func:`atml.suite.datasets.decode_plan`: exactly their pipeline when they share one, else at the largest short
    side, each model resizing it down by its own rule). Digits: classes 5-9 by default, which the demo's models
    never saw (``digit_classes``: others)."""
    return datasets.load(cfg, ctx, [m.built.preprocessing for m in models], generated=(120, 60),
                         digit_classes=digit_classes, limits=limits)


def source_notes(cfg: CompareConfig, models: list[Subject], data_name: str) -> list[str]:
    notes = [f"Models: {', '.join(f'{m.label} ({m.family}; {m.built.info.description})' for m in models)}.",
             f"Data: {data_name}; each model reads the images at its own weights' preprocessing "
             f"({', '.join(f'{m.label}: {m.built.preprocessing.input_size} px' for m in models)})."]
    if cfg.weights == "digits" or any(m.weights == "digits" for m in models):
        notes.append("Demo preset: atml's digits models (trained on scikit-learn digits 0-4, cached) seen on digits "
                     "5-9, classes none of them was trained on; the numbers describe these small models, not the "
                     "ImageNet ones the full preset compares.")
    if any(m.weights == "random" for m in models):
        notes.append(RANDOM_WEIGHTS_NOTE)
    return notes
