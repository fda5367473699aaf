"""atml's own code paths beside the plain loops a peer writes, timed in one run on one device.

``atml speed`` answers "is atml's frozen backbone as fast as the card allows?" with the
code users run, not bare models:

* **frozen features**: atml's whole extraction path (uint8 32 px images in host memory,
  copied to the device, resized and normalised there, features copied back to the host:
  :class:`~atml.train.features.FrozenFeatures` and :func:`~atml.train.features.extract`,
  exactly what ``resnet.head`` and ``vit.pooling`` run) beside timm's benchmark loop
  (random input already on the device at 224 px, channels_last, bf16 autocast on CUDA,
  ``inference_mode``), for ResNet-152 and DeiT-Small;
* **fine-tuning**: atml's training loop on the ``resnet.transfer`` pipeline (full fine-tuning:
  preprocessing, augmentation, Adam, the shared loop) beside a plain step (forward,
  cross-entropy, backward, Adam) on input already on the device.

Every rate is warmed up (kernel selection, cuDNN autotuning, compilation) and measured
between device synchronisations; random weights (speed does not depend on their values).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from atml import benchmark as bench
from atml import config as config_lib
from atml import runtime
from atml.errors import Option, UsageError
from atml.models import factory, freezing
from atml.models.preprocess import Preprocess
from atml.results import Pair, Speed
from atml.train.features import FrozenFeatures, extract

RESNET = "resnet152"
DEIT = "deit_small_patch16_224"
RESOLUTION = 224


@dataclasses.dataclass
class Sizes:
    """How much work each measurement does."""

    batch: int = 256
    extract_images: int = 5120
    """Images through the extraction path per timed call (and timm's loop does as many)."""
    train_steps: int = 20
    """Timed training steps (after one untimed epoch of warm-up for atml's loop)."""

    @classmethod
    def for_device(cls, device: torch.device, quick: bool = False) -> Sizes:
        if quick:
            return cls(batch=2, extract_images=4, train_steps=2)
        if device.type == "cpu":
            return cls(batch=16, extract_images=64, train_steps=3)
        return cls()


def timm_inference(name: str, device: torch.device, sizes: Sizes, amp: bool = True) -> float:
    """timm's benchmark loop: ``model(x)`` on a random batch already on the device."""
    import timm

    model: Any = timm.create_model(name, pretrained=False).eval()
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.randn(sizes.batch, 3, RESOLUTION, RESOLUTION, device=device).contiguous(
        memory_format=torch.channels_last)
    calls = max(1, sizes.extract_images // sizes.batch)

    @torch.inference_mode()
    def step() -> None:
        with runtime.autocast(device, amp):
            model(x)

    return bench.images_per_s(step, sizes.batch, device, calls=calls, warmup=3)


def atml_resnet_features(device: torch.device, sizes: Sizes, amp: bool = True, compile: str = "off",
                         arch: str = RESNET) -> float:
    """resnet.head's path: build, freeze (BatchNorm folded), channels_last, FrozenFeatures, extract."""

    backbone = factory.create(arch, "random", family="cnn", num_classes=10)
    model = freezing.freeze(backbone.model).to(memory_format=torch.channels_last)
    frozen = FrozenFeatures(Preprocess(backbone.preprocessing, RESOLUTION, channels_last=True), model, compile=compile)
    return _extraction_rate(frozen.to(device), device, sizes, amp)


def atml_vit_features(device: torch.device, sizes: Sizes, amp: bool = True, compile: str = "off",
                      arch: str = DEIT) -> float:
    """vit.pooling's path: the ViT wrapper, CLS and mean-of-patches from one forward, extract."""
    from atml.models import vit

    model = factory.create(arch, "random", family="vit").model
    frozen = FrozenFeatures(model.preprocess, model, vit.pooled_features, compile=compile)
    return _extraction_rate(frozen.to(device), device, sizes, amp)


def _extraction_rate(frozen: FrozenFeatures, device: torch.device, sizes: Sizes, amp: bool) -> float:
    images = torch.randint(0, 256, (sizes.extract_images, 3, 32, 32), dtype=torch.uint8)
    kw: dict[str, Any] = {"batch_size": sizes.batch, "device": device, "amp": amp}
    for _ in range(2):  # warm-up: autotuning, compilation, both batch shapes
        extract(frozen, images[:sizes.batch * 2], **kw)
    bench.sync(device)
    return extract(frozen, images, **kw)[1]


def plain_finetune(device: torch.device, sizes: Sizes, amp: bool = True, arch: str = RESNET) -> float:
    """A plain training step on a batch already on the device: forward, loss, backward, Adam."""
    import torchvision

    model = getattr(torchvision.models, arch)(num_classes=10).train().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(sizes.batch, 3, RESOLUTION, RESOLUTION, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (sizes.batch,), device=device)

    def step() -> None:
        with runtime.autocast(device, amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return bench.images_per_s(step, sizes.batch, device, calls=sizes.train_steps, warmup=3)


def atml_finetune(device: torch.device, sizes: Sizes, amp: bool = True, arch: str = RESNET) -> float:
    """resnet.transfer's full fine-tuning through the shared loop; the rate of its second epoch."""
    from atml.train import finetune
    from atml.train.loop import Batches, Fit, MemoryRecorder, fit

    backbone = factory.create(arch, "random", family="cnn", num_classes=10)
    pipeline, optimizer = finetune.pipeline(backbone.model, backbone.preprocessing, num_classes=10, res=RESOLUTION,
                                            trainable=("body",), seed=RESOLUTION, lr=1e-3, backbone_lr_scale=0.1,
                                            device=device)
    n = sizes.batch * sizes.train_steps
    batches = Batches((torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.arange(n) % 10),
                      sizes.batch, shuffle=True, rank=0, world=1)
    if device.type == "cuda":
        batches = batches.pin()
    rows = fit(Fit(pipeline, optimizer, batches, None, 2, device, MemoryRecorder(), stage="speed",
                   say=lambda _m: None, autocast=lambda: runtime.autocast(device, amp)))
    return rows[-1].images_per_s or 0.0  # epoch 1 warmed up


def compare(device: torch.device, sizes: Sizes, *, compile: str = "off", amp: bool = True,
            models: tuple[str, ...] = (RESNET, DEIT), say: Callable[[str], None] = print) -> list[Pair]:
    """Every comparison, printed as it is measured."""
    pairs = []
    jobs: list[tuple[str, Callable[[], float], Callable[[], float], str]] = []
    if RESNET in models:
        jobs.append(("ResNet-152 frozen features", lambda: atml_resnet_features(device, sizes, amp),
                     lambda: timm_inference("resnet152", device, sizes, amp), "timm loop"))
        if compile != "off":
            jobs.append((f"ResNet-152 frozen features, compile={compile}",
                         lambda: atml_resnet_features(device, sizes, amp, compile),
                         lambda: timm_inference("resnet152", device, sizes, amp), "timm loop"))
    if DEIT in models:
        jobs.append(("DeiT-S frozen features", lambda: atml_vit_features(device, sizes, amp),
                     lambda: timm_inference(DEIT, device, sizes, amp), "timm loop"))
        if compile != "off":
            jobs.append((f"DeiT-S frozen features, compile={compile}",
                         lambda: atml_vit_features(device, sizes, amp, compile),
                         lambda: timm_inference(DEIT, device, sizes, amp), "timm loop"))
    if RESNET in models:
        jobs.append(("ResNet-152 full fine-tuning", lambda: atml_finetune(device, sizes, amp),
                     lambda: plain_finetune(device, sizes, amp), "plain step"))
    for name, ours, theirs, peer_name in jobs:
        peer = theirs()
        pair = Pair(name, ours(), peer, peer_name)
        _free(device)
        say(f"  {name:<44} atml {pair.atml:9.1f} img/s   {peer_name} {pair.peer:9.1f} img/s   "
            f"ratio {pair.ratio:.2f}")
        pairs.append(pair)
    return pairs


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def check_options(device: str, compile: str, models: tuple[str, ...]) -> None:
    """Refuse an option ``atml speed`` / :func:`atml.speed` cannot honour, naming the valid ones."""

    unknown = [m for m in models if m not in (RESNET, DEIT)]
    if unknown or not models:
        raise UsageError(Option("models", ",".join(models)), f" is not valid; choose from {RESNET}, {DEIT}")
    if compile not in config_lib.COMPILE_MODES:
        raise UsageError(Option("compile", compile),
                         f" is not valid; choose one of {', '.join(config_lib.COMPILE_MODES)}")
    if device not in config_lib.DEVICES:
        raise UsageError(Option("device", device), f" is not valid; choose one of {', '.join(config_lib.DEVICES)}")


def run(device_name: str = "auto", *, quick: bool = False, compile: str = "off",
        models: tuple[str, ...] = (RESNET, DEIT), say: Callable[[str], None] = print) -> Speed:
    """``atml speed``: the comparisons on one device, with what they ran on; returns the figures."""
    device = runtime.select_device(device_name)
    sizes = Sizes.for_device(device, quick)
    precision = bench.PRECISION_NAMES[runtime.compute_dtype(device)]
    torch.backends.cudnn.benchmark = True
    name = runtime.environment(device, 0)["device_name"]
    say(f"atml speed: {name}, torch {torch.__version__}, {precision}, batch {sizes.batch}, {RESOLUTION} px, "
        f"random weights")
    started = time.perf_counter()
    pairs = compare(device, sizes, compile=compile, models=models, say=say)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return Speed(str(device), name, torch.__version__, precision, date, time.perf_counter() - started, list(pairs),
                 dataclasses.asdict(sizes))
