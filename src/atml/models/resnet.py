"""ResNets split into features and head, with freezing policies that keep BN frozen too.

``ResNetClassifier`` wraps a torchvision ``ResNet`` (or atml's small digits ResNet, which
has the same attribute names) and exposes ``forward_features`` / ``forward_head`` as timm
does, so a frozen backbone can be run once and its features cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

from atml.errors import UsageError
from atml.models import cnn, registry
from atml.models import weights as wts
from atml.models.preprocess import Preprocess
from atml.models.registry import Preprocessing
from atml.models.types import Built

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
        return self.fc(ResNetClassifier.body_features(self, x))


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
        return self.body.fc

    def set_head(self, head: nn.Linear) -> None:
        self.body.fc = head

    @property
    def num_features(self) -> int:
        return self.body.fc.in_features

    @staticmethod
    def body_features(body: Any, x: torch.Tensor) -> torch.Tensor:
        x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        x = body.layer4(body.layer3(body.layer2(body.layer1(x))))
        return torch.flatten(body.avgpool(x), 1)  # (B, features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body_features(self.body, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.body.fc(features)  # (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


ModuleT = TypeVar("ModuleT", bound=nn.Module)
CNN = ResNetClassifier | cnn.CNNClassifier
"""What :func:`build` returns inside :class:`~atml.models.types.Built`: a ResNet or any other CNN, one interface."""


def build(arch: str, num_classes: int, weights: str, *, offline: bool,
          state: dict[str, torch.Tensor] | None = None, state_info: wts.WeightsInfo | None = None,
          keep_head: bool = False) -> Built[CNN]:
    """Build ``arch`` with ``weights`` (a name, 'random', a file, or an in-memory ``state``).

    The model gets a new head of ``num_classes``; ``keep_head`` also keeps the weights' own
    classifier beside it (:attr:`Built.pretrained_head`).

    ``arch``: a torchvision CNN (ResNets keep ResNet's layout, so resnet.skip works on them),
    ``timm/NAME`` for any timm CNN, or one of atml's digits ResNets.
    """
    cnn.check_arch(arch, ARCHS)
    entry = registry.lookup("cnn", arch)
    chosen = entry.weights.get(weights)
    pre = chosen.preprocessing if chosen else entry.preprocessing
    named = {tag: tvm.get_weight(w.location) for tag, w in entry.weights.items() if w.source == "torchvision"}
    if arch in DIGITS_ARCHS:
        body: nn.Module = DigitsResNet(num_classes, blocks=DIGITS_ARCHS[arch])
    elif cnn.is_timm(arch):
        return _build_timm(arch, num_classes, weights, offline=offline, state=state, state_info=state_info,
                           keep_head=keep_head)
    else:
        body = cnn.torchvision_body(arch)
    info = wts.WeightsInfo("random", f"random initialisation ({arch})", pretrained=False)
    if state is not None:
        info = state_info or wts.WeightsInfo("memory", "in-memory state dict")
    elif weights in named:
        state, info = wts.torchvision_state_dict(named[weights], offline=offline)
        info.spec = weights
    elif wts.is_path(weights):
        state, info = wts.read_state_dict(weights)
    elif weights != "random":
        valid = ", ".join([*named, "random", "a path to a .pth/.safetensors file"])
        raise UsageError(f"--weights {weights!r} is not known for {arch}; valid: {valid}")
    if isinstance(body, tvm.ResNet | DigitsResNet):
        if state is not None:
            wts.load_backbone(body, state, head_prefix="fc.", source=info.description)
        model: CNN = ResNetClassifier(body, num_classes)
        prefix = "fc."
    else:
        model = cnn.classifier(arch, body, num_classes)
        prefix = model.source_head
        if state is not None:
            wts.load_backbone(model.body, state, head_prefix=prefix, source=info.description)
    head = source_head(state, prefix, model.num_features) if keep_head and state is not None else None
    return Built(model, Preprocess(pre), info, head)


def source_head(state: dict[str, torch.Tensor], prefix: str, num_features: int) -> nn.Linear | None:
    """The classifier under ``prefix`` in ``state`` as a linear layer, or None when there is none of that width."""
    weight, bias = (state.get(f"{prefix}{k}", state.get(f"module.{prefix}{k}")) for k in ("weight", "bias"))
    if weight is None or weight.ndim != 2 or weight.shape[1] != num_features:
        return None
    head = nn.Linear(num_features, weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head


def _build_timm(arch: str, num_classes: int, weights: str, *, offline: bool,
                state: dict[str, torch.Tensor] | None, state_info: wts.WeightsInfo | None,
                keep_head: bool = False) -> Built[CNN]:
    info = wts.WeightsInfo("random", f"random initialisation ({arch})", pretrained=False)
    file = None
    if weights == "imagenet" and state is None:
        file, info = wts.timm_pretrained_file(arch.removeprefix(cnn.TIMM), offline=offline)
    elif wts.is_path(weights) and state is None:
        state, info = wts.read_state_dict(weights)
    elif state is not None:
        info = state_info or wts.WeightsInfo("memory", "in-memory state dict")
    elif weights != "random":
        raise UsageError(f"--weights {weights!r} is not known for {arch}; valid: imagenet, random, "
                         "a path to a .pth/.safetensors file")
    body, pretrained_cfg = cnn.timm_body(arch, file)
    model = cnn.classifier(arch, body, num_classes)
    if state is not None:
        wts.load_backbone(body, state, head_prefix=model.source_head, source=info.description)
    head = None
    if keep_head and (state is not None or file is not None):  # timm drops the head it loads with num_classes=0
        loaded = state if state is not None else wts.read_state_dict(file)[0] if file is not None else {}
        head = source_head(loaded, model.source_head, model.num_features)
    entry = registry.lookup("cnn", arch).preprocessing
    pre = Preprocessing(tuple(pretrained_cfg.get("mean", entry.mean)), tuple(pretrained_cfg.get("std", entry.std)),
                        int(pretrained_cfg.get("input_size", (3, entry.input_size))[-1]),
                        pretrained_cfg.get("interpolation", entry.interpolation),
                        float(pretrained_cfg.get("crop_pct", entry.crop_pct)))
    return Built(model, Preprocess(pre), info, head)


def freeze(model: ModuleT, trainable: Iterable[str] | None = None, *, fold: bool = True) -> ModuleT:
    """Freeze all but the modules named in ``trainable`` (prefixes of parameter names; default: the head).

    Frozen BatchNorm layers become :class:`FrozenBatchNorm2d`, whose statistics cannot
    change even in ``train()`` mode (a bare ``requires_grad_(False)`` misses that). With
    ``fold`` (the default), each frozen BatchNorm that directly follows a frozen convolution
    is then folded into that convolution's weights and bias, and becomes ``nn.Identity``:
    the same function with one pass over the activations fewer per layer.

    Works in place on any device and dtype, before or after ``.to()``: replacements are
    built from the tensors they replace.
    """
    prefixes = tuple(trainable) if trainable is not None else (getattr(model, "head_name", "body.fc"),)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
    _freeze_bn(model, "", prefixes)
    if fold:
        fold_frozen_batchnorm(model)
    return model


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms: inference-mode BatchNorm, in any mode.

    Unlike torchvision's ``FrozenBatchNorm2d`` (a separate multiply and add, in float32, so
    that under bf16 autocast every activation became float32 and the frozen ResNet-152 ran at
    40% of the card's speed), this calls the framework's fused inference kernel, which keeps
    the input's dtype. It is not a ``_BatchNorm`` subclass, so ``convert_sync_batchnorm`` and
    ``train()`` leave it alone; its tensors are buffers, so no optimizer can update them.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        if bn.running_mean is None or bn.running_var is None:
            raise UsageError("a BatchNorm without running statistics cannot be frozen")
        self.num_features, self.eps = bn.num_features, bn.eps
        ones = torch.ones_like(bn.running_mean)
        self.register_buffer("weight", bn.weight.detach().clone() if bn.weight is not None else ones)
        self.register_buffer("bias", bn.bias.detach().clone() if bn.bias is not None else torch.zeros_like(ones))
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False,
                            momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _freeze_bn(module: nn.Module, path: str, keep: tuple[str, ...]) -> None:
    """Frozen normalisation of any kind, wherever it sits outside ``keep``.

    Plain BatchNorm becomes :class:`FrozenBatchNorm2d` (foldable); other BatchNorm
    subclasses, which add to it (timm's ``BatchNormAct2d`` applies its activation), keep
    their class and forward but are pinned to eval mode (:func:`pin_eval`). Layer and group
    norms have no statistics: frozen parameters freeze them. Dropout and stochastic depth
    in frozen parts are pinned to eval mode too: a frozen network is a fixed function.
    """
    for name, child in module.named_children():
        full = f"{path}.{name}" if path else name
        if full.startswith(keep):
            continue
        if (type(child) in (nn.BatchNorm2d, nn.SyncBatchNorm) and isinstance(child, nn.modules.batchnorm._BatchNorm)
                and child.track_running_stats):
            setattr(module, name, FrozenBatchNorm2d(child))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            if child.running_mean is None:
                raise UsageError(f"{full} is a BatchNorm without running statistics; it cannot be frozen")
            pin_eval(child)
            _freeze_bn(child, full, keep)
        elif isinstance(child, nn.modules.dropout._DropoutNd) or type(child).__name__ in RANDOM_DEPTH:
            pin_eval(child)
        else:
            _freeze_bn(child, full, keep)


RANDOM_DEPTH = ("StochasticDepth", "DropPath")
"""torchvision's and timm's stochastic depth (active in train mode, like dropout)."""
_PINNED: dict[type, type] = {}


def pin_eval(module: nn.Module) -> nn.Module:
    """Keep ``module`` in eval mode whatever ``train()`` asks (same class behaviour, same state-dict keys)."""
    cls = type(module)
    if cls not in _PINNED.values():
        if cls not in _PINNED:
            _PINNED[cls] = type(f"EvalPinned{cls.__name__}", (cls,),
                                {"train": lambda self, mode=True: cls.train(self, False), "__module__": __name__})
        module.__class__ = _PINNED[cls]
    return module.eval()


def conv_bn_pairs(module: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, conv name, bn name)`` for each BatchNorm applied directly to a convolution's output.

    The ResNet layout (torchvision, timm and atml's digits nets): ``convN`` then ``bnN`` in a
    block or the stem, and ``Conv2d`` then BatchNorm in a ``Sequential`` (the projection shortcut).
    """
    pairs: list[tuple[nn.Module, str, str]] = []
    for parent in module.modules():
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs += [(parent, a, b) for a, b in zip(names, names[1:])
                      if isinstance(children[a], nn.Conv2d) and _is_bn(children[b])]
            continue
        for name, child in children.items():
            bn_name = "bn" + name.removeprefix("conv")
            if name.startswith("conv") and isinstance(child, nn.Conv2d) and _is_bn(children.get(bn_name)):
                pairs.append((parent, name, bn_name))
    return pairs


def _is_bn(module: nn.Module | None) -> bool:
    return isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d))


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold every frozen BatchNorm into the frozen convolution before it; returns how many.

    ``conv(x) * s + t`` with ``s = weight / sqrt(running_var + eps)`` and ``t = bias -
    running_mean * s`` is the convolution with weights scaled by ``s`` and bias ``t``. Only
    pairs where both are frozen are folded, so gradients and BatchNorm statistics of anything
    trained are untouched.
    """
    count = 0
    for parent, conv_name, bn_name in conv_bn_pairs(module):
        conv: nn.Conv2d = getattr(parent, conv_name)
        bn = getattr(parent, bn_name)
        if not isinstance(bn, FrozenBatchNorm2d) or any(p.requires_grad for p in conv.parameters()):
            continue
        with torch.no_grad():
            scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # (C_out,)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        setattr(parent, bn_name, nn.Identity())
        count += 1
    return count


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
                         f"with --set blocks=[...]; blocks that can be ablated: {', '.join(valid) or 'none'}")
    return [name for name in chosen if name is not None]
