"""The weights atml trains itself (the demo's stand-ins, tag ``digits``): made once, cached like a hub file.

    key = ensure("vit-digits", "digits", family="vit", training=Training(epochs=30))   # trains once, then cached
    built = factory.create("vit-digits", "digits", family="vit", recipe=key)          # only reads the file

The model registry names each stand-in's recipe (its ``location``); the recipe's module trains
it (:mod:`atml.train.pretrain`, :mod:`atml.train.vit_recipe`, :mod:`atml.train.clip_recipe`).
This module sits above both ``models/`` and ``train/``: it makes sure the file
``$ATML_CACHE/pretrained/<model>-<recipe key>.pt`` exists, training it under a lock so that
two processes (or torchrun ranks) train it once, and returns the recipe key the factory reads
it by. Building a model never trains one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch

from atml import storage
from atml.errors import UsageError
from atml.models import factory
from atml.models import weights as weights_lib
from atml.models.registry import canonical_weights


@dataclasses.dataclass(frozen=True)
class Training:
    """How atml trains the weights it makes itself: the recipe's epochs (None: the recipe's default), its seed,
    the device, and where its progress goes."""

    epochs: int | None = None
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = False
    say: Callable[[str], None] = print


class Recipe(Protocol):
    def key(self) -> str: ...


class RecipeModule(Protocol):
    """What a recipe's module offers: its recipe for a model, and the training that makes the weights' file."""

    def recipe(self, name: str, *, seed: int, epochs: int | None) -> Any: ...

    def train(self, recipe: Any, device: torch.device, progress: bool,
              say: Callable[[str], None]) -> dict[str, Any]: ...


def _recipes() -> dict[str, RecipeModule]:
    from atml.train import clip_recipe, pretrain, vit_recipe

    return {"atml.train.pretrain": pretrain, "atml.train.vit_recipe": vit_recipe,
            "atml.train.clip_recipe": clip_recipe}


def ensure(name: str, weights: str, *, family: str | None = None, training: Training | None = None) -> str | None:
    """The recipe key of ``name``'s ``weights`` when atml trains them itself, their file made first if it is not in
    the cache; None for any other weights (nothing to make)."""
    family = family or factory.find(name).family
    if not factory.trained_here(family, name, weights):  # before any lookup: arch=auto has no registry entry
        return None
    entry = factory.find(name, family)
    training = training or Training()
    location = entry.weights[canonical_weights(weights)].location
    recipes = _recipes()
    if location not in recipes:
        raise UsageError(f"{name} weights={weights} name the recipe {location!r}, which atml does not have")
    module = recipes[location]
    recipe = module.recipe(name, seed=training.seed, epochs=training.epochs)
    path = weights_lib.atml_file(name, recipe.key())
    with storage.locked(path):  # a second process waits here, then finds the file
        if path.is_file():
            training.say(f"{name}: using atml's cached weights {path}")
        else:
            storage.torch_save(module.train(recipe, training.device, training.progress, training.say), path)
    return str(recipe.key())
