"""What :func:`atml.models.factory.create` returns, and the interface of each kind of model.

Every model atml builds comes back as one :class:`Built`: the module, the preprocessing its
weights expect (one :class:`~atml.models.preprocess.Preprocess` for every family), what the run
records about the weights, and, for a classifier whose weights carried one, their own head.

The experiments rely on one interface per kind, as structural types a checker verifies:

* :class:`Classifier`: CNNs (torchvision, timm, atml's digits ResNets): ``forward_features`` ->
  pooled features, ``forward_head`` -> logits, the head and the stages by name.
* :class:`TokenModel`: ViTs (timm, transformers): ``embed`` -> tokens, ``encode``, ``classify``,
  and every layer's attention inside ``with model.attention():``.
* :class:`ImageTextModel`: CLIP (open_clip): images and texts to one embedding space.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from atml.models.preprocess import Preprocess
from atml.models.registry import Preprocessing
from atml.provenance import WeightsInfo

M = TypeVar("M", bound=nn.Module, covariant=True)


@dataclasses.dataclass(frozen=True)
class Built(Generic[M]):
    """A model with its weights loaded, the preprocessing they expect and what to record about them."""

    model: M
    preprocess: Preprocess
    """uint8 images -> the normalised input at the weights' own size (move it to the model's device)."""
    info: WeightsInfo
    pretrained_head: nn.Linear | None = None
    """The classifier the weights came with, when they had one over the pooled features (``keep_head=True``)."""

    @property
    def preprocessing(self) -> Preprocessing:
        return self.preprocess.preprocessing


@runtime_checkable
class Classifier(Protocol):
    """A CNN split as timm splits it: pooled features, then a linear head."""

    head_name: str
    """The head's module path (what freezing keeps trainable)."""

    @property
    def num_features(self) -> int: ...

    @property
    def head(self) -> nn.Linear: ...

    def set_head(self, head: nn.Linear) -> None: ...

    @property
    def stage_paths(self) -> tuple[str, ...]: ...

    @property
    def last_paths(self) -> tuple[str, ...]: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, features: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TokenModel(Protocol):
    """A ViT: class (and register) tokens first, then the patches on a ``grid`` x ``grid`` layout."""

    classes: list[str]
    grid: int
    num_prefix_tokens: int
    preprocess: Preprocess

    @property
    def has_head(self) -> bool: ...

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...

    def encode(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def classify(self, encoded: torch.Tensor) -> torch.Tensor: ...

    def tokens(self, x: torch.Tensor) -> torch.Tensor: ...

    def attention(self, consume: Callable[[torch.Tensor], None] | None = None
                  ) -> contextlib.AbstractContextManager[list[torch.Tensor]]: ...


@runtime_checkable
class ImageTextModel(Protocol):
    """CLIP: images and texts into one embedding space (raw or L2-normalised)."""

    preprocess: Preprocess

    @property
    def sigmoid(self) -> bool: ...

    def encode_images(self, images: torch.Tensor, *, normalize: bool = False) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str], *, normalize: bool = False) -> torch.Tensor: ...


def _no_prefix(model: Any) -> int:
    return 0


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """Everything atml knows of one model family, declared once in the family's own module as ``SPEC``
    (``atml/models/<family>.py``; the factory finds it by the family's name in :data:`registry.FAMILIES`).

    ``check`` refuses, in one line, a name the family cannot build; ``build(entry, weights, *, num_classes,
    offline, keep_head, **options)`` builds the architecture and loads the resolved weights; ``model_type`` is
    what it builds and ``protocol`` the interface the experiments use; ``layers``, ``prefix_tokens`` and
    ``features`` are how ``compare.*`` reads it (None: the comparisons do not take it).
    """

    name: str
    model_type: type | tuple[type, ...]
    protocol: type
    check: Callable[[str], None]
    build: Callable[..., Built[Any]]
    layers: Callable[[Any], dict[str, nn.Module]] | None = None
    prefix_tokens: Callable[[Any], int] = _no_prefix
    features: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    options: tuple[str, ...] = ()
    """The keywords ``build`` takes besides the common ones (:func:`atml.models.factory.create` refuses others)."""


def trained_from_scratch(family: str, model_type: type[nn.Module]) -> FamilySpec:
    """The spec of a family atml builds itself and the experiments train (the VAE, the DCGAN): atml's own
    entries only; ``model_type(**options)``, freshly initialised or loaded from a state dict file."""
    from atml.errors import UsageError
    from atml.models import registry

    def check(name: str) -> None:
        own = [m.name for m in registry.MODELS.values() if m.family == family]
        if name not in own:
            raise UsageError(f"{name!r} is not one of atml's {family} models ({', '.join(own)})")

    def build(entry: registry.Model, weights: Any, *, num_classes: int, offline: bool, keep_head: bool,
              **options: Any) -> Built[nn.Module]:
        model = model_type(**options)
        if weights.state is not None:
            model.load_state_dict(weights.state)
        return Built(model, Preprocess(entry.preprocessing), weights.info)

    import inspect

    options = tuple(n for n in inspect.signature(model_type).parameters if n != "self")
    return FamilySpec(family, model_type, nn.Module, check, build, options=options)

