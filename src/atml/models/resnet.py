"""What only ResNets have: atml's small digits ResNets, the ResNet classifier split into features and head,
and skip-connection removal (``resnet.skip``). Building any CNN is :func:`atml.models.cnn.build`; freezing and
BatchNorm folding, :mod:`atml.models.freezing`.

``ResNetClassifier`` wraps a torchvision ``ResNet`` (or atml's small digits ResNet, which
has the same attribute names) and exposes ``forward_features`` / ``forward_head`` as timm
does, so a frozen backbone can be run once and its features cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

from atml.errors import Key, Placeholder, UsageError

RESNETS = ("resnet152", "resnet101", "resnet50", "resnet34", "resnet18", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
"""torchvision's ResNets: what resnet.skip can ablate (any torchvision or timm CNN serves the other experiments)."""
DIGITS_ARCHS = {"digits-resnet": (2, 2, 2, 2), "digits-resnet-small": (1, 1, 1, 1)}
"""atml's small ResNets for the demo: blocks per stage (the small one mirrors ResNet-18 vs -152)."""
ARCHS = (*RESNETS, *DIGITS_ARCHS)


class DigitsResNet(nn.Module):
    """A small bottleneck ResNet for 8-32 px images, laid out like torchvision's ResNet.

    Same attribute names (``conv1 ... layer4, avgpool, fc``) and torchvision's own
    ``Bottleneck`` blocks, so every tool written for ResNet-152 works on it unchanged. The
    stem is a stride-1 3x3 conv without max-pool, as small inputs need.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64, 128),
                 blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        inplanes = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks)):
            layer, inplanes = _make_layer(inplanes, width, count, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(ResNetClassifier.body_features(self, x))
        return out


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    out = planes * Bottleneck.expansion
    down = None
    if stride != 1 or inplanes != out:
        down = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride, down)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out


class ResNetClassifier(nn.Module):
    """A ResNet body with a new head; ``forward = forward_head(forward_features(x))``.

    The same interface as :class:`atml.models.cnn.CNNClassifier` (head, stages, the "last
    block"), with ResNet's own names: ``body.fc``, ``body.layer1`` ... ``body.layer4``.
    """

    head_name = "body.fc"
    stage_paths = ("body.layer1", "body.layer2", "body.layer3", "body.layer4")
    last_paths = ("body.layer4",)

    def __init__(self, body: nn.Module, num_classes: int) -> None:
        super().__init__()
        resnet: Any = body  # torchvision's ResNet or DigitsResNet: the same attribute names
        resnet.fc = nn.Linear(resnet.fc.in_features, num_classes)
        self.body: Any = resnet

    @property
    def head(self) -> nn.Linear:
        out: nn.Linear = self.body.fc
        return out

    def set_head(self, head: nn.Linear) -> None:
        self.body.fc = head

    @property
    def num_features(self) -> int:
        out: int = self.body.fc.in_features
        return out

    @staticmethod
    def body_features(body: Any, x: torch.Tensor) -> torch.Tensor:
        x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        x = body.layer4(body.layer3(body.layer2(body.layer1(x))))
        return torch.flatten(body.avgpool(x), 1)  # (B, features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body_features(self.body, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body.fc(features)  # (B, classes)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# -- skip connections ---------------------------------------------------------------------
class NoSkip(nn.Module):
    """Stands in for a Bottleneck's (absent) ``downsample``: the identity branch becomes 0.

    torchvision's Bottleneck computes ``relu(F(x) + identity)`` with ``identity =
    downsample(x)`` when a downsample module is set, so installing this module turns the
    block into ``relu(F(x))`` without copying torchvision's code.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())  # broadcasts: F(x) + 0


def residual_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """Every Bottleneck/BasicBlock by dotted name relative to the ResNet body (e.g. ``layer3.1``)."""
    from torchvision.models.resnet import BasicBlock

    body = model.body if isinstance(model, ResNetClassifier) else model
    return {name: m for name, m in body.named_modules() if isinstance(m, (Bottleneck, BasicBlock))}


def ablatable_blocks(model: nn.Module) -> list[str]:
    """Blocks whose identity branch is a plain identity (shape-preserving), so it can be removed."""
    return [name for name, block in residual_blocks(model).items()
            if block.downsample is None or isinstance(block.downsample, NoSkip)]


def remove_skips(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Remove the identity addition from the named blocks; projection blocks are refused."""
    blocks = residual_blocks(model)
    valid = ablatable_blocks(model)
    for name in names:
        if name not in blocks:
            raise UsageError(f"there is no residual block {name!r}; blocks that can be ablated: {', '.join(valid)}")
        if name not in valid:
            raise UsageError(f"block {name!r} is a projection (downsampling) block: its shortcut changes shape "
                             f"and cannot be removed. Blocks that can be ablated: {', '.join(valid)}")
        blocks[name].downsample = NoSkip()
    return list(names)


def default_ablation(model: nn.Module) -> list[str]:
    """One shape-preserving block in each of layer2, layer3 and layer4 (the first such)."""
    valid = ablatable_blocks(model)
    chosen = [next((n for n in valid if n.startswith(f"layer{i}.")), None) for i in (2, 3, 4)]
    missing = [f"layer{i}" for i, name in zip((2, 3, 4), chosen) if name is None]
    if missing:
        raise UsageError(f"this architecture has no shape-preserving block in {', '.join(missing)} (each of its "
                         f"blocks there is a projection block), so there is no default to ablate; name the blocks "
                         "with ", Key("blocks", Placeholder("[...]")),
                         f"; blocks that can be ablated: {', '.join(valid) or 'none'}")
    return [name for name in chosen if name is not None]
