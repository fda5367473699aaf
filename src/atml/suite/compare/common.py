"""What the ``compare.*`` experiments share: a list of models (any registry name, each with its weights), built
through the model factory at their own preprocessing, and one labelled dataset they all see.

``--set models=[A,B,...]`` takes names as ``atml models`` lists them (atml's entries, any torchvision CNN,
``timm/NAME``, any open_clip model), each optionally ``NAME@WEIGHTS``; without ``@`` a model gets the run's
``--weights``.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from atml.context import RunContext
from atml.data import ImageDataset, digits
from atml.models import factory
from atml.models.preprocess import Preprocess
from atml.models.types import Built
from atml.provenance import RANDOM_WEIGHTS_NOTE
from atml.suite import datasets
from atml.suite.compare.config import CompareConfig


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
        built = ctx.model(name, weights, family=entry.family, seed=cfg.seed, source=f"weights_{i}", label=name,
                          num_classes=10, keep_head=keep_head)
        built.model.to(ctx.device).eval()
        built.preprocess.to(ctx.device)
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
    if any(m.built.info.demo for m in models):
        notes.append("Demo preset: atml's digits models (trained on scikit-learn digits 0-4, cached) seen on digits "
                     "5-9, classes none of them was trained on; the numbers describe these small models, not the "
                     "ImageNet ones the full preset compares.")
    if any(not m.built.info.pretrained for m in models):
        notes.append(RANDOM_WEIGHTS_NOTE)
    return notes
