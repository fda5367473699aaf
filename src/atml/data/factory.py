"""One dataset factory for every family, as timm's ``create_dataset``: a name and options in, uint8 tensors out.

    create(Spec("cifar10", root="~/data"))                  # official batches, MD5-checked
    create(Spec("folder", root="~/photos", image_size=96))  # any labelled image folder
    create(Spec("digits", digit_classes=(5, 6, 7, 8, 9)))   # the demo's data

Every dataset arrives as the same in-memory :class:`~atml.data.ImageDataset` (uint8 images,
int64 labels, class names), so every experiment runs on any of them. A family says which
names it takes (``DATA`` in the family's package under :mod:`atml.suite`); its config's ``data`` field picks
one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from atml import runtime, timemap
from atml.data import (
    ImageDataset,
    cifar10,
    cifar100,
    digits,
    fashion_mnist,
    folder,
    imagenet,
    rehearsal,
    stl10,
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to load, and how a family wants it."""

    name: str
    root: str | None = None
    """``--data-dir``: where the files are (default: ``$ATML_CACHE/data``)."""
    seed: int = 0
    offline: bool = False
    scratch: Path | None = None
    """Where generated datasets are written (the run folder's ``data/``)."""
    generated: tuple[int, int] = (100, 50)
    """Train and test images of a generated dataset (smoke preset, tests)."""
    digit_classes: tuple[int, ...] = tuple(range(10))
    digit_size: int | None = None
    """Upsample the 8x8 digits to this size (the 28 px generative models)."""
    digit_val_fraction: float = 0.3
    image_size: int = 128
    """Image folders and ImageNet: each image's short side resized to this, then a square of it kept."""
    crop: int | None = None
    """Image folders and ImageNet: the centre crop the model takes of that square later (it places the square so the
    model sees what torchvision's Resize + CenterCrop gives); None: the resized image's own centre square."""
    grayscale: bool = False
    """Image folders: convert to one grey channel (the 28 px generative models)."""
    skip_bad_images: bool = False
    interpolation: str = "bilinear"
    """Image folders and ImageNet: Pillow's resize filter (a ViT's preprocessing uses ``bicubic``)."""
    progress: bool = True
    """Show a progress bar (rate, time left) while an image folder is decoded into the cache."""


@dataclasses.dataclass
class Loaded:
    """The dataset, and the files an image folder could not read (when they were skipped)."""

    data: ImageDataset
    skipped: list[str] = dataclasses.field(default_factory=list)
    readiness: folder.Readiness | None = None
    """How an image folder's splits were had (decoded now or from the cache); None for the other datasets."""


def _root(spec: Spec) -> Path:
    return Path(spec.root).expanduser() if spec.root else runtime.cache_dir() / "data"


def _digits(spec: Spec) -> Loaded:
    data = digits.load(spec.digit_classes, val_fraction=spec.digit_val_fraction, seed=spec.seed)
    if spec.digit_size:
        data.train, data.val = data.train.resized(spec.digit_size), data.val.resized(spec.digit_size)
        data.source += f"; bilinearly upsampled from 8x8 to {spec.digit_size}x{spec.digit_size}"
    return Loaded(data)


def _folder(spec: Spec) -> Loaded:
    if not spec.root:
        from atml.errors import Option, Placeholder, UsageError

        raise UsageError("data=folder needs ", Option("data_dir", Placeholder("DIR")), " (DIR/train/CLASS/*.jpg and "
                         "DIR/val/CLASS/*.jpg, or DIR/CLASS/*.jpg)")
    read = folder.load(spec.root, size=spec.image_size, seed=spec.seed, skip_bad=spec.skip_bad_images,
                       grayscale=spec.grayscale, interpolation=spec.interpolation, crop=spec.crop,
                       progress=spec.progress)
    return Loaded(read.data, read.skipped, read.readiness)


def _imagenet(spec: Spec) -> Loaded:
    if not spec.root:
        from atml.errors import Option, Placeholder, UsageError

        raise UsageError("data=imagenet needs ", Option("data_dir", Placeholder("DIR")), f" with {imagenet.LAYOUT}")
    read = imagenet.load(spec.root, size=spec.image_size, interpolation=spec.interpolation, crop=spec.crop,
                         skip_bad=spec.skip_bad_images, progress=spec.progress)
    return Loaded(read.data, read.skipped, read.readiness)


def _scratch(spec: Spec) -> Path:
    return spec.scratch or runtime.cache_dir() / "generated"


def _rehearsal(name: str, spec: Spec) -> Loaded:
    return Loaded(rehearsal.load(name, spec.seed))


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset by what an experiment needs to know of it, besides its loader: whether it is decoded from image
    files (then ``--data-dir`` is needed and ``image_size`` applies), whether it is generated (files of the real
    format, not the real data), whether it is the demo's stand-in (scikit-learn's digits), and whose classes its
    labels are (ImageNet-1k's: a model's own head scores it)."""

    load: Callable[[Spec], Loaded]
    files: bool = False
    generated: bool = False
    imagenet_labels: bool = False
    demo: bool = False


def _generated(load: Callable[[Spec], Loaded]) -> Dataset:
    return Dataset(load, generated=True)


DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset(lambda s: Loaded(cifar10.load(_root(s), offline=s.offline))),
    "cifar100": Dataset(lambda s: Loaded(cifar100.load(_root(s), offline=s.offline))),
    "stl10": Dataset(lambda s: Loaded(stl10.load(_root(s), offline=s.offline))),
    "fashion-mnist": Dataset(lambda s: Loaded(fashion_mnist.load(_root(s), offline=s.offline))),
    "digits": Dataset(_digits, demo=True),
    "folder": Dataset(_folder, files=True),
    "imagenet": Dataset(_imagenet, files=True, imagenet_labels=True),
    "generated-cifar10": _generated(lambda s: Loaded(cifar10.load_generated(
        cifar10.write_batches(_scratch(s), n_train=s.generated[0], n_test=s.generated[1], seed=s.seed)))),
    "generated-cifar100": _generated(lambda s: Loaded(cifar100.load_generated(
        cifar100.write_files(_scratch(s), n_train=s.generated[0], n_test=s.generated[1], seed=s.seed)))),
    "generated-stl10": _generated(lambda s: Loaded(stl10.load_generated(
        stl10.write_binaries(_scratch(s), n_train=s.generated[0], n_test=s.generated[1], seed=s.seed)))),
    "generated-fashion-mnist": _generated(lambda s: Loaded(fashion_mnist.load_generated(
        fashion_mnist.write_idx(_scratch(s), n_train=s.generated[0], n_test=s.generated[1], seed=s.seed)))),
    **{name: _generated(functools.partial(_rehearsal, name)) for name in rehearsal.NAMES},
}
"""Every dataset atml reads, by the name a config's ``data`` field uses."""


def describe(name: str) -> Dataset:
    """What ``name`` is (:class:`Dataset`); a UsageError listing the valid names for any other."""
    if name not in DATASETS:
        from atml.errors import UsageError

        raise UsageError(f"data={name!r} is not a known dataset; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]



@timemap.counted("data")
def create(spec: Spec) -> Loaded:
    """The dataset ``spec.name``, loaded and checked (see each reader for its checks)."""
    return describe(spec.name).load(spec)
