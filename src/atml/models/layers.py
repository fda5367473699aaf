"""The layers of any model atml builds, in forward order, and one pooled vector per image from each.

For comparing models layer by layer (``compare.cka``) and reading their features before the
head (``compare.probe``):

* a ResNet (torchvision's, atml's digits nets): every residual block (``layer1.0`` ...), as
  Kornblith et al. and Raghu et al. read them; any other CNN: timm's or torchvision's stages;
* a ViT (timm, transformers): every transformer block;
* CLIP (open_clip): the image tower's transformer blocks, or a ResNet tower's four stages.

Each output becomes one vector per image: feature maps ``(B, C, H, W)`` are averaged over
their spatial positions, token sequences ``(B, T, D)`` over their patch tokens (the class and
register tokens left out), so a layer's width is its channel or embedding width whatever the
input size. Raghu et al. (2021) flatten instead; averaging keeps memory independent of the
resolution and is what atml's CKA and probes use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from atml.errors import UsageError
from atml.models import factory


def comparable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of ``model``'s blocks or stages, in forward order (module docstring)."""
    family = factory.family_of(model)
    if family.layers is None:
        raise UsageError(f"{family.name} models have no layers the comparisons read; compare CNNs, ViTs or CLIP")
    return family.layers(model)


def prefix_tokens(model: nn.Module) -> int:
    """How many leading tokens are not patches (class and register tokens): left out of a token average.
    Any module atml did not build has none."""
    family = factory.built_by(model)
    return family.prefix_tokens(model) if family is not None else 0


def pool(output: Any, prefix: int) -> torch.Tensor:
    """One float32 vector per image from a layer's output (module docstring)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    out: torch.Tensor = output.float()
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:
        return out[:, prefix:].mean(1) if out.shape[1] > prefix else out.mean(1)
    return out.reshape(len(out), -1)


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The representation before the head for normalised images ``x``: a CNN's pooled features, a ViT's
    pre-logits (its class token, or what its head pools), CLIP's image embedding."""
    family = factory.family_of(model)
    if family.features is None:
        raise UsageError(f"{family.name} models have no features the probes read; probe CNNs, ViTs or CLIP")
    return family.features(model, x)


@contextlib.contextmanager
def recorded(model: nn.Module, layers: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward leaves ``{name: (B, width)}`` of pooled outputs in the yielded dict
    (replaced on every forward; the hooks are removed on exit)."""
    store: dict[str, torch.Tensor] = {}
    prefix = prefix_tokens(model)

    def hook(name: str) -> Any:
        def keep(_module: nn.Module, _inputs: object, output: Any) -> None:
            store[name] = pool(output, prefix).detach()
        return keep

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
