"""Freezing a network for transfer: parameters, BatchNorm statistics, dropout and stochastic depth, and folding
each frozen BatchNorm into the convolution before it. Works on any CNN atml builds (torchvision, timm, atml's
digits ResNets) and on any module tree laid out like them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from atml.errors import UsageError

ModuleT = TypeVar("ModuleT", bound=nn.Module)


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
