"""Any timm or torchvision CNN as a classifier with a replaceable head and named stages.

``resnet.head``, ``resnet.features`` and ``resnet.transfer`` need four things of a
backbone: pooled features (``forward_features``), a head that can be replaced
(``head_name``, ``set_head``), the stages whose outputs are the early/middle/late
features (``stage_paths``), and the modules the "last block" regime trains
(``last_paths``). :class:`~atml.models.resnet.ResNetClassifier` gives them for ResNets
(torchvision's and atml's digits nets); :class:`CNNClassifier` for every other CNN:

* ``arch=timm/NAME`` (any ``timm.list_models()`` CNN): built with ``num_classes=0``, so
  the model returns its own pooled pre-logits features; stages are the modules its
  ``feature_info`` names (what ``features_only=True`` hooks), from stride 4 on.
* ``arch=NAME`` for a torchvision classification CNN (``convnext_tiny``,
  ``efficientnet_b0``, ``regnet_y_400mf``, ...): the last ``nn.Linear`` becomes the
  identity; stages are found by running a small input through the trunk and keeping, for
  each resolution, the last module that produces it.

Preprocessing (mean, std) comes from the model's own configuration: timm's
``pretrained_cfg``, torchvision's weights transforms.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from atml.errors import UsageError
from atml.models import registry, resnet
from atml.models import weights as wts
from atml.models.preprocess import Preprocess
from atml.models.registry import TIMM as TIMM
from atml.models.types import Built, Classifier, FamilySpec

NOT_CNNS = ("vit_", "swin_", "maxvit_")
"""torchvision classification models that are transformers (their features are not channel-first maps)."""
MIN_STAGE_REDUCTION = 4
"""Stages from stride 4 on: the stem (stride 1-2) is not a stage."""
PROBE_SIZE = 128
"""The image size a CNN's stages are found at (Inception v3 needs at least 75 px)."""


class CNNClassifier(nn.Module):
    """A CNN body that returns pooled features, and a new linear head: ``forward = fc(body(x))``."""

    head_name = "fc"

    def __init__(self, body: nn.Module, num_features: int, num_classes: int, stages: tuple[str, ...],
                 last: tuple[str, ...], source_head: str) -> None:
        super().__init__()
        self.body = body
        self.source_head = source_head
        """Prefix of the original classifier's keys in a state dict of ``body`` (skipped when loading)."""
        self.fc = nn.Linear(num_features, num_classes)
        self._stages = tuple(f"body.{s}" for s in stages)
        self._last = tuple(f"body.{s}" for s in last)

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def set_head(self, head: nn.Linear) -> None:
        self.fc = head

    @property
    def num_features(self) -> int:
        return self.fc.in_features

    @property
    def stage_paths(self) -> tuple[str, ...]:
        return self._stages

    @property
    def last_paths(self) -> tuple[str, ...]:
        """The last stage and every module after it (final conv, norm): what "last block + head" trains."""
        return self._last

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.body(x), 1)  # (B, features)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(features)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def depth_stages(stage_paths: tuple[str, ...]) -> dict[str, str]:
    """``{early, middle, late}``: the first stage, the one before the last, the last (ResNet: layer1, 3, 4)."""
    if len(stage_paths) < 3:
        raise UsageError(f"this model has {len(stage_paths)} stages from stride {MIN_STAGE_REDUCTION} on; "
                         "early/middle/late features need three")
    return {"early": stage_paths[0], "middle": stage_paths[-2], "late": stage_paths[-1]}


@torch.no_grad()
def check_input_size(model: nn.Module, size: int, arch: str) -> None:
    """Refuse an input size the network cannot take (a stage's kernel larger than its feature map), in one line."""
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype))
    except RuntimeError as err:
        if "size" not in str(err).lower():
            raise
        raise UsageError(f"arch={arch} cannot take {size} px inputs ({str(err).splitlines()[0][:120]}); use a larger "
                         "resolution (32 px or more suits most ImageNet CNNs)") from None
    finally:
        model.train(was_training)


# -- names --------------------------------------------------------------------------------
def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM)


@functools.cache
def torchvision_cnns() -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(n for n in tvm.list_models(module=tvm) if not n.startswith(NOT_CNNS))


def check_arch(arch: str, known: tuple[str, ...]) -> None:
    """Refuse a name that is neither atml's, a torchvision CNN nor ``timm/`` + a timm model."""
    if arch in known or arch in torchvision_cnns():
        return
    if is_timm(arch):
        import timm

        name = arch.removeprefix(TIMM)
        if timm.is_model(name):
            return
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise UsageError(f"arch={arch!r}: timm has no model {name!r}"
                         + (f"; similar: {', '.join(TIMM + c for c in close)}" if close else "")
                         + " (timm.list_models() lists them all)")
    raise UsageError(f"arch={arch!r} is not valid; choose one of {', '.join(known)}, a torchvision CNN "
                     f"({', '.join(torchvision_cnns()[:6])}, ...) or timm/NAME for any timm model "
                     "(timm/convnext_tiny, timm/efficientnet_b0, ...)")


# -- building -----------------------------------------------------------------------------
def timm_body(arch: str, file: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The timm model without its classifier (``num_classes=0``) and its pretrained config.

    ``file``: pretrained weights already on disk (checked by the caller), loaded by timm's own
    pretrained path so its key filters apply.
    """
    import timm

    name = arch.removeprefix(TIMM)
    kwargs: dict[str, Any] = {"pretrained": file is not None, "num_classes": 0}
    if file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": file}
    model: Any = timm.create_model(name, **kwargs)
    return model, dict(model.pretrained_cfg)


def torchvision_body(arch: str) -> nn.Module:
    import torchvision.models as tvm

    kwargs = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
    out: nn.Module = tvm.get_model(arch, weights=None, **kwargs)
    return out


def classifier(arch: str, body: Any, num_classes: int) -> CNNClassifier:
    """Wrap ``body`` (timm with ``num_classes=0``, or a torchvision classifier) with a new head."""
    if is_timm(arch):
        groups = _timm_stages(body)
        num_features = _feature_width(body)
        head = body.pretrained_cfg.get("classifier")
        source_head = f"{head}." if isinstance(head, str) else "head."
    else:
        source_head, num_features = _drop_last_linear(body, arch)
        groups = _probed_stages(body, _trunk(body))
    if not groups:
        raise UsageError(f"arch={arch!r}: no stages with channel-first feature maps were found; atml's CNN "
                         "experiments need a convolutional network")
    return CNNClassifier(body, num_features, num_classes, tuple(g[-1] for g in groups), _last(body, groups[-1]),
                      source_head)


def _timm_stages(body: Any) -> list[tuple[str, ...]]:
    """timm's stages (``feature_info``: what ``features_only`` hooks), one module each."""
    info = getattr(body, "feature_info", None)
    if not info:
        return _probed_stages(body, _trunk(body))
    stages: list[tuple[str, ...]] = [(f["module"],) for f in info if f.get("reduction", 0) >= MIN_STAGE_REDUCTION]
    return stages or [(f["module"],) for f in info]


def _feature_width(body: nn.Module) -> int:
    width = getattr(body, "head_hidden_size", None) or getattr(body, "num_features", None)
    if width:
        return int(width)
    with torch.no_grad():
        return int(body.eval()(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE)).flatten(1).shape[1])


def _drop_last_linear(body: nn.Module, arch: str) -> tuple[str, int]:
    """Replace the classifier's last ``nn.Linear`` with the identity; returns its key prefix and input width."""
    linears = [(name, m) for name, m in body.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError(f"arch={arch!r} has no linear classifier to replace (e.g. SqueezeNet's convolutional "
                         "head); pick another CNN or its timm/ version")
    name, last = linears[-1]
    parent, _, child = name.rpartition(".")
    setattr(body.get_submodule(parent) if parent else body, child, nn.Identity())
    return f"{name}.", last.in_features


def _trunk(body: nn.Module) -> str:
    """Where a CNN's stages live: its ``features``/``trunk_output``/``stages``/``blocks`` container, or itself."""
    for name in ("features", "trunk_output", "stages", "blocks", "layers"):
        if isinstance(getattr(body, name, None), nn.Module):
            return name
    return ""


@torch.no_grad()
def _probed_stages(body: nn.Module, trunk: str) -> list[tuple[str, ...]]:
    """The trunk's children grouped by the resolution they compute at (from stride 4 on): one group per stage.

    A pooling or activation child (no parameters) closes the stage before it (VGG's max-pools, GoogLeNet's
    global pool). A stage's features are its last child's output; training "the last stage" trains its
    whole group (DenseNet: transition3, denseblock4, norm5; EfficientNet: its last blocks and final 1x1 conv).
    """
    container = body.get_submodule(trunk) if trunk else body
    shapes: dict[str, tuple[int, ...]] = {}
    children = [(name, m) for name, m in container.named_children() if not isinstance(m, nn.Identity)]
    handles = [m.register_forward_hook(lambda _m, _i, out, n=name: shapes.__setitem__(n, tuple(out.shape)))
               for name, m in children]
    was_training = body.training
    try:
        body.eval()(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
    finally:
        for handle in handles:
            handle.remove()
        body.train(was_training)
    prefix = f"{trunk}." if trunk else ""
    groups: dict[int, list[str]] = {}
    size = None
    for name, module in children:
        shape = shapes.get(name)
        if not shape or len(shape) != 4:
            continue
        if size is None or any(True for _ in module.parameters()):
            size = shape[-1]  # a pooling or activation child ends the stage before it, never starts one
        if PROBE_SIZE // size >= MIN_STAGE_REDUCTION:
            groups.setdefault(size, []).append(prefix + name)
    return [tuple(names) for names in groups.values()]


def _last(body: nn.Module, last_stage: tuple[str, ...]) -> tuple[str, ...]:
    """The last stage's modules, and every top-level module of ``body`` registered after the one holding it."""
    top = last_stage[-1].split(".")[0]
    names = [name for name, _ in body.named_children()]
    after = names[names.index(top) + 1:] if top in names else []
    return (*last_stage, *(n for n in after if any(True for _ in body.get_submodule(n).parameters())))


# -- building: every CNN atml runs --------------------------------------------------------
CNN = resnet.ResNetClassifier | CNNClassifier
"""What :func:`build` returns inside :class:`~atml.models.types.Built`: a ResNet or any other CNN, one interface."""


def build(arch: str, num_classes: int, weights: wts.Resolved, *, keep_head: bool = False) -> Built[CNN]:
    """``arch`` with the resolved ``weights`` (:func:`atml.models.weights.resolve`) loaded into its body.

    The model gets a new head of ``num_classes``; ``keep_head`` also keeps the weights' own
    classifier beside it (:attr:`Built.pretrained_head`).

    ``arch``: a torchvision CNN (ResNets keep ResNet's layout, so resnet.skip works on them),
    ``timm/NAME`` for any timm CNN, or one of atml's digits ResNets.
    """
    check_arch(arch, resnet.ARCHS)
    if is_timm(arch):
        return _build_timm(arch, num_classes, weights, keep_head=keep_head)
    entry = registry.lookup("cnn", arch)
    chosen = entry.weights.get(weights.info.spec)
    pre = chosen.preprocessing if chosen else entry.preprocessing
    state, info = weights.state, weights.info
    if arch in resnet.DIGITS_ARCHS:
        body: nn.Module = resnet.DigitsResNet(num_classes, blocks=resnet.DIGITS_ARCHS[arch])
    else:
        body = torchvision_body(arch)
    if isinstance(body, tvm.ResNet | resnet.DigitsResNet):
        if state is not None:
            wts.load_backbone(body, state, head_prefix="fc.", source=info.description)
        model: CNN = resnet.ResNetClassifier(body, num_classes)
        prefix = "fc."
    else:
        model = classifier(arch, body, num_classes)
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


def _build_timm(arch: str, num_classes: int, weights: wts.Resolved, *, keep_head: bool = False) -> Built[CNN]:
    state, file, info = weights.state, weights.file, weights.info
    body, _ = timm_body(arch, file)
    model = classifier(arch, body, num_classes)
    if state is not None:
        wts.load_backbone(body, state, head_prefix=model.source_head, source=info.description)
    head = None
    if keep_head and (state is not None or file is not None):  # timm drops the head it loads with num_classes=0
        loaded = state if state is not None else wts.read_state_dict(file)[0] if file is not None else {}
        head = source_head(loaded, model.source_head, model.num_features)
    pre = registry.lookup("cnn", arch).preprocessing  # timm's pretrained_cfg, converted once (the registry's entry)
    return Built(model, Preprocess(pre), info, head)


# -- the family, as the factory and compare.* know it --------------------------------------
def _layers(model: Any) -> dict[str, nn.Module]:
    """A ResNet's residual blocks (as Kornblith et al. read them); any other CNN's stages."""
    blocks = resnet.residual_blocks(model)
    if blocks:
        return dict(blocks)
    return {path.removeprefix("body."): model.get_submodule(path) for path in model.stage_paths}


def _features(model: Any, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = model.forward_features(x)
    return out


def _build_entry(entry: registry.Model, weights: wts.Resolved, *, num_classes: int, offline: bool, keep_head: bool,
                 **options: Any) -> Built[CNN]:
    return build(entry.name, num_classes, weights, keep_head=keep_head, **options)


SPEC = FamilySpec("cnn", (resnet.ResNetClassifier, CNNClassifier), Classifier,
                  lambda name: check_arch(name, resnet.ARCHS), _build_entry, _layers, features=_features)
"""CNNs: any torchvision or timm CNN and atml's digits ResNets (``resnet.*``, ``compare.*``)."""
