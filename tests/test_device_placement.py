"""Every model an experiment builds follows the run's device and dtype (CI's guard for CUDA runs).

CI has no GPU, so these tests make the run's device one that differs from where torch
creates tensors by default, as ``cuda`` does: the ``meta`` device. Each registered
experiment runs its smoke preset with ``device=meta`` until it first needs a value from
the device (a loss to check, features to copy back), which a meta tensor cannot give.
Global module hooks check every forward that receives device tensors: each parameter and
buffer of the module must be on the device. A module left behind on the CPU (a layer built
after ``.to(device)``, a backbone that ``.to()`` does not reach) fails with its name.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from atml import config as config_lib
from atml import runner
from atml.console import QUIET
from atml.models import factory, freezing
from atml.models.preprocess import Preprocess
from atml.suite import registry
from atml.suite.resnet import config as resnet_config
from atml.suite.resnet import skip as resnet_skip
from atml.train.features import FrozenFeatures

META = torch.device("meta")


class PlacementError(AssertionError):
    pass


def misplaced(module: nn.Module, device: torch.device, dtype: torch.dtype | None = None,
              recurse: bool = True) -> list[str]:
    """Names of parameters and buffers of ``module`` not on ``device`` (or of another floating dtype)."""
    bad = []
    tensors = [*module.named_parameters(recurse=recurse), *module.named_buffers(recurse=recurse)]
    for name, tensor in tensors:
        wrong_dtype = dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype
        if tensor.device.type != device.type or wrong_dtype:
            bad.append(f"{name} ({tensor.device}, {tensor.dtype})")
    return bad


@dataclasses.dataclass
class Audit:
    """What the global hooks saw: forwards on the device, and how deep the current call is."""

    device: torch.device
    depth: int = 0
    completed: int = 0
    calls: list[str] = dataclasses.field(default_factory=list)


def _has_device_tensor(args: Any, device: torch.device) -> bool:
    flat = args if isinstance(args, (tuple, list)) else (args,)
    return any(isinstance(a, torch.Tensor) and a.device.type == device.type for a in flat)


@contextlib.contextmanager
def placement_audit(device: torch.device) -> Iterator[Audit]:
    audit = Audit(device)

    def pre(module: nn.Module, args: Any) -> None:
        audit.depth += 1
        if _has_device_tensor(args, device):
            audit.calls.append(type(module).__name__)
            # every module: its own tensors; the outermost call: all of them (weights used functionally)
            bad = misplaced(module, device, recurse=audit.depth == 1)
            if bad:
                raise PlacementError(f"{type(module).__name__} ran on {device} with tensors elsewhere: "
                                     + ", ".join(bad[:5]))

    def post(module: nn.Module, args: Any, output: Any) -> None:
        audit.depth -= 1
        if audit.depth == 0 and _has_device_tensor(args, device):
            audit.completed += 1

    handles = [nn.modules.module.register_module_forward_pre_hook(pre),
               nn.modules.module.register_module_forward_hook(post)]
    try:
        yield audit
    finally:
        for handle in handles:
            handle.remove()


def run_on_meta(name: str, tmp_path: Path, overrides: tuple[str, ...] = ()) -> Audit:
    """Run ``name``'s smoke preset with device=meta up to its first read of a device value."""
    exp = registry().get(name)
    cfg = config_lib.build(exp.config_cls, exp.presets, "smoke", list(overrides))
    cfg = dataclasses.replace(cfg, device="meta")
    stopped: BaseException | None = None
    with placement_audit(META) as audit:
        try:
            runner.execute(exp, cfg, preset="smoke", out=tmp_path, report=QUIET)
        except PlacementError:
            raise
        except (RuntimeError, NotImplementedError, TypeError) as err:
            # the legitimate end: a host read of a meta value, outside every forward, or inside one whose
            # tensors the hooks already found on the device (BatchNorm's cumulative average reads a count)
            if audit.depth and "item() cannot be called on meta tensors" not in str(err):
                raise PlacementError(f"{name} stopped inside a forward on {META} (after {audit.calls[-3:]}): "
                                     f"{err}") from err
            stopped = err
    assert audit.completed, f"{name}: no model ran on the run's device before the first host read ({stopped!r})"
    return audit


CASES = [(name, ()) for name in registry().names()] + [
    ("resnet.head", ("feature_cache=false",)),
    *[("resnet.transfer", (f"cells=[{cell}]",)) for cell in resnet_config.ALL_CELLS[1:]],
    ("resnet.features", ("compare_arch=", "arch=resnet18")),
    # any model (issue 17): timm's BatchNormAct2d pinned, torchvision BatchNorm folded, register tokens
    ("resnet.features", ("compare_arch=", "arch=timm/efficientnet_b0")),
    ("resnet.transfer", ("cells=[random:last]", "arch=mobilenet_v3_small")),
    ("vit.attention", ("arch=timm/vit_small_patch14_reg4_dinov2", "input_size=56")),
]


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[f"{n}{'-' + '-'.join(o) if o else ''}" for n, o in CASES])
def test_every_experiment_builds_its_models_on_the_runs_device(name: str, overrides: tuple[str, ...],
                                                              tmp_path: Path) -> None:
    run_on_meta(name, tmp_path, overrides)


@pytest.mark.parametrize("variant", resnet_skip.VARIANTS, ids=[v[0] for v in resnet_skip.VARIANTS])
def test_every_skip_variant_builds_on_the_runs_device(variant: tuple, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resnet_skip, "VARIANTS", (variant,))
    run_on_meta("resnet.skip", tmp_path)


def test_the_audit_catches_a_module_left_on_the_cpu(tmp_path: Path) -> None:
    """The guard itself: a layer added after the move is found and named."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).to(META)
    model.append(nn.BatchNorm2d(4))  # built on the default device, after the move
    with placement_audit(META), pytest.raises(PlacementError, match=r"2\.running_mean \(cpu"):
        model(torch.zeros(1, 3, 8, 8, device=META))


# -- the building blocks, on a second device and a second dtype ---------------------------------
@pytest.mark.parametrize("order", ["freeze-then-move", "move-then-freeze"])
@pytest.mark.parametrize(("device", "dtype"), [(META, torch.float32), (torch.device("cpu"), torch.float64)])
@pytest.mark.parametrize("arch", ["resnet18", "timm/efficientnet_b0", "efficientnet_b0"])
def test_freezing_follows_the_model_in_either_order(order: str, device: torch.device, dtype: torch.dtype,
                                                    arch: str) -> None:
    model = factory.create(arch, "random", family="cnn", num_classes=10).model
    trainable = (*model.last_paths, model.head_name)
    if order == "freeze-then-move":
        model = freezing.freeze(model, trainable=trainable).to(device, dtype)
    else:
        model = freezing.freeze(model.to(device, dtype), trainable=trainable)
    assert misplaced(model, device, dtype) == []
    with placement_audit(device):
        out = model(torch.zeros(2, 3, 32, 32, device=device, dtype=dtype))
    assert out.shape == (2, 10) and out.dtype == dtype


def test_frozen_features_move_the_backbone_with_them() -> None:
    backbone = factory.create("resnet18", "random", family="cnn", num_classes=10)
    model = freezing.freeze(backbone.model)
    frozen = FrozenFeatures(Preprocess(backbone.preprocessing, 32, channels_last=True), model).to(META)
    assert misplaced(frozen, META) == []
    assert misplaced(model, META) == [], "the backbone must be a submodule, so .to() reaches it"
    with placement_audit(META):
        assert frozen(torch.zeros(2, 3, 32, 32, dtype=torch.uint8, device=META)).shape == (2, 512)


def test_a_deep_copy_of_a_frozen_model_stays_frozen_and_placed() -> None:
    model = freezing.freeze(factory.create("resnet18", "random", family="cnn", num_classes=10).model.to(torch.float64))
    twin = copy.deepcopy(model)
    assert misplaced(twin, torch.device("cpu"), torch.float64) == []
    assert not any(p.requires_grad for n, p in twin.named_parameters() if not n.startswith("body.fc"))
