"""The front door to atml's models: one call builds any of them, as timm's ``create_model`` and open_clip's
``create_model_and_transforms`` do.

    built = create("resnet152", "imagenet", num_classes=10)        # Built(model, preprocess, info, pretrained_head)
    built = create("timm/vit_small_patch14_dinov2", "imagenet")     # a TokenModel (ViT), its own preprocessing
    built = create("clip-digits", "digits", recipe=key)             # weights atml trained (atml.pretrained.ensure)
    built = create("mlp-vae", latent_dim=2)                         # the VAE and the DCGAN too

Every kind of weights is had through one resolver (:func:`atml.models.weights.resolve`): a registry tag
(torchvision, a URL, timm's or open_clip's files on the Hugging Face hub), ``random``, a file or folder, and the
weights atml trains itself, read from its cache by their recipe key (:mod:`atml.pretrained` makes that file;
building a model never trains one); a transformers folder brings its architecture along. The builders build
architectures and load what the resolver found. The registry (:mod:`atml.models.registry`) is data and
imports no builder; this module imports them all. The experiments ask for a model here and nowhere else.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from torch import nn

from atml import storage, timemap
from atml.errors import UsageError
from atml.models import weights as weights_lib
from atml.models.registry import (
    DEMO_TAG,
    FAMILIES,
    MODELS,
    RANDOM_FILE,
    TRANSFORMERS_FOLDER,
    Model,
    canonical_weights,
    demo_models,
    is_path,
    lookup,
)
from atml.models.types import Built, FamilySpec
from atml.runtime import cache_dir

if TYPE_CHECKING:  # importing the family modules at run time would load torchvision, timm and open_clip eagerly
    from atml.models.clip import CLIPModel
    from atml.models.cnn import CNN
    from atml.models.gan import DCGAN
    from atml.models.vae import VAE
    from atml.models.vit import ViT


def spec(family: str) -> FamilySpec:
    """The family's spec, declared once in its own module (``atml/models/<family>.py``, ``SPEC``)."""
    if family not in FAMILIES:
        raise UsageError(f"family={family!r} is not valid; choose one of {', '.join(FAMILIES)}")
    found: FamilySpec = importlib.import_module(f"atml.models.{family}").SPEC
    return found


def built_by(model: nn.Module) -> FamilySpec | None:
    """The spec of the family that built ``model``, or None for a module atml did not build."""
    return next((found for found in map(spec, FAMILIES) if isinstance(model, found.model_type)), None)


def family_of(model: nn.Module) -> FamilySpec:
    """The spec of the family that built ``model`` (a module atml did not build is refused in one line)."""
    if (found := built_by(model)) is not None:
        return found
    raise UsageError(f"a {type(model).__name__} is not a model atml built; build it with atml.models.factory.create")


def find(name: str, family: str | None = None) -> Model:
    """The entry for ``name`` in ``family``, or in the first family whose experiments accept it (``atml models``).

    Without a family a ``timm/`` name is read as a ViT when timm calls it one (vit_, deit, eva, beit), else as a CNN.
    """
    if family is None and name.startswith("timm/"):
        family = "vit" if name.removeprefix("timm/").startswith(("vit_", "deit", "eva", "beit")) else "cnn"
    for candidate in (family,) if family else FAMILIES:
        try:
            spec(candidate).check(name)
        except UsageError:
            if family:
                raise
            continue
        return lookup(candidate, name)
    raise UsageError(f"{name!r} is not a model atml knows: not one of atml's entries ('atml models' lists them), "
                     "a torchvision CNN, timm/NAME of a timm model, or an open_clip model")


def _names(family: str) -> list[str]:
    return [m.name for m in MODELS.values() if m.family == family]


def check_weights(family: str, name: str, weights: str, extra: tuple[str, ...] = ()) -> None:
    """Refuse, in one line, weights that ``name`` does not have (a config's ``validate`` calls this once).

    Accepted: the entry's tags, ``random``, a path to a file or folder, and ``extra`` (an experiment's own names).
    """
    weights = canonical_weights(weights)
    if weights == DEMO_TAG and not trained_here(family, name, weights):
        raise UsageError(f"weights={DEMO_TAG} needs arch={' or '.join(demo_models(family))}")
    known = ("random", *lookup(family, name).weights, *extra)
    if weights not in known and not is_path(weights):
        raise UsageError(f"weights={weights!r} is not known for {name}; valid: {', '.join(dict.fromkeys(known))}, "
                         "or a path to a weights file")


def trained_here(family: str, name: str, weights: str) -> bool:
    """Whether ``weights`` of ``name`` are a demo stand-in atml trains itself (its recipe, cached)."""
    entry = MODELS.get((family, name))  # atml trains only its own entries; never ask a library about a path
    chosen = entry.weights.get(canonical_weights(weights)) if entry else None
    return chosen is not None and chosen.source == "atml"


@overload
def create(name: str, weights: str = ..., *, family: Literal["cnn"], num_classes: int = ..., offline: bool = ...,
           keep_head: bool = ..., recipe: str | None = ..., **options: Any) -> Built[CNN]: ...
@overload
def create(name: str, weights: str = ..., *, family: Literal["vit"], num_classes: int = ..., offline: bool = ...,
           keep_head: bool = ..., recipe: str | None = ..., **options: Any) -> Built[ViT]: ...
@overload
def create(name: str, weights: str = ..., *, family: Literal["clip"], num_classes: int = ..., offline: bool = ...,
           keep_head: bool = ..., recipe: str | None = ..., **options: Any) -> Built[CLIPModel]: ...
@overload
def create(name: str, weights: str = ..., *, family: Literal["vae"], num_classes: int = ..., offline: bool = ...,
           keep_head: bool = ..., recipe: str | None = ..., **options: Any) -> Built[VAE]: ...
@overload
def create(name: str, weights: str = ..., *, family: Literal["gan"], num_classes: int = ..., offline: bool = ...,
           keep_head: bool = ..., recipe: str | None = ..., **options: Any) -> Built[DCGAN]: ...
@overload
def create(name: str, weights: str = ..., *, family: str | None = ..., num_classes: int = ..., offline: bool = ...,
           keep_head: bool = ..., recipe: str | None = ..., **options: Any) -> Built[nn.Module]: ...
@timemap.counted("build")
def create(name: str, weights: str = "random", *, family: str | None = None, num_classes: int = 1000,
           offline: bool = True, keep_head: bool = False, recipe: str | None = None,
           **options: Any) -> Built[Any]:
    """Build ``name`` with ``weights``; see the module docstring.

    ``family``: where to look ``name`` up (default: :func:`find`'s rule). ``num_classes``: a CNN's new head
    (``keep_head`` keeps the weights' own beside it, :attr:`Built.pretrained_head`). ``recipe``: the key of
    the weights atml trained itself (:func:`atml.pretrained.ensure` gives it). ``options``: what the
    family's builder takes besides: ``backend``/``input_size``/``classes`` (ViT), ``seed`` (CLIP's random
    initialisation), ``latent_dim``/``hidden`` (VAE), ``latent_dim``/``width`` (DCGAN).
    """
    weights = canonical_weights(weights)
    family = family or ("vit" if name == TRANSFORMERS_FOLDER else find(name).family)
    _check_options(name, family, options)
    if weights == RANDOM_FILE:
        weights = str(random_file(name, family))
    entry = find(name, family)
    resolved = weights_lib.resolve(entry, weights, offline=offline, recipe=recipe,
                                   transformers=family == "vit" and options.get("backend") == "hf")
    return spec(entry.family).build(entry, resolved, num_classes=num_classes, offline=offline, keep_head=keep_head,
                                    **options)


def random_file(name: str, family: str) -> Path:
    """``pretrained-file``: CNN ``name``'s random weights (drawn from seed 0) saved once to ``$ATML_CACHE/weights``,
    to be read back through the weights-file path like a user's own file."""
    if family != "cnn":
        raise UsageError(f"weights={RANDOM_FILE} stands in for a CNN's pretrained file; {name} is a {family} model")
    path = cache_dir() / "weights" / f"{name.replace('/', '--')}-random-as-pretrained.pth"
    if not path.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            body = create(name, "random", family="cnn").model.body
        storage.torch_save(body.state_dict(), path)
    return path


COMMON = ("family", "num_classes", "offline", "keep_head", "recipe")
"""The keywords :func:`create` takes for every family."""


def _check_options(name: str, family: str, options: dict[str, Any]) -> None:
    """Refuse, in one line, a keyword the family's builder does not take (before any weights are read)."""
    own = spec(family).options
    unknown = sorted(set(options) - set(own))
    if unknown:
        raise UsageError(f"create({name!r}): {', '.join(k + '=' for k in unknown)} is not an option of the {family} "
                         f"family; valid: weights, {', '.join(COMMON + own)} (a state dict file: weights=PATH)")
