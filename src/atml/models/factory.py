"""The front door to atml's models: from a name to its registry entry (and, as the refactor goes on, to a built
model). The registry (:mod:`atml.models.registry`) is data and imports no builder; this module may import them all.
"""

from __future__ import annotations

from atml.errors import UsageError
from atml.models.registry import FAMILIES, Model, lookup


def find(name: str, family: str | None = None) -> Model:
    """The entry for ``name`` in ``family``, or in the first family whose experiments accept it (``atml models``).

    Without a family a ``timm/`` name is read as a ViT when timm calls it one (vit_, deit, eva, beit), else as a CNN.
    """
    from atml.models import clip, cnn, resnet, vit

    checks = {"cnn": lambda: cnn.check_arch(name, resnet.ARCHS), "vit": lambda: vit.check_arch(name),
              "clip": lambda: clip.check_arch(name)}
    if family is None and name.startswith("timm/"):
        family = "vit" if name.removeprefix("timm/").startswith(("vit_", "deit", "eva", "beit")) else "cnn"
    for candidate in (family,) if family else FAMILIES:
        try:
            checks[candidate]()
        except UsageError:
            if family:
                raise
            continue
        return lookup(candidate, name)
    raise UsageError(f"{name!r} is not a model atml knows: not one of atml's entries ('atml models' lists them), "
                     "a torchvision CNN, timm/NAME of a timm model, or an open_clip model")
