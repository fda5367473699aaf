"""ImageNet-1k's validation set in the layout torchvision's and timm's validation scripts read.

    DIR/val/n01440764/ILSVRC2012_val_00000293.JPEG      (1,000 folders named by WordNet ID)
    DIR/train/n01440764/*.JPEG                          (optional; read only when present)

A subset of the WordNet-ID folders is read as it is: each class keeps its ImageNet-1k index,
and the run says it holds a subset (published ImageNet-1k figures are then not comparable).

Class indices are the positions of the sorted WordNet IDs and class names come from the
list inside timm, so a model with an ImageNet-1k head is scored on its own classes. Images
are decoded once into :mod:`atml.data.cache` at the size the model's preprocessing resizes
to (DeiT-S: short side 248, a 248 square here, the model crops 224), with its interpolation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atml.data import ImageDataset, ImageSplit, cache
from atml.data.folder import FolderRead, Readiness, as_image_split, decoded_as, kept_names, list_files, unreadable
from atml.errors import DataError, Option, Placeholder

LAYOUT = ("DIR/val/<wnid>/*.JPEG (ILSVRC2012's validation set: its 1,000 WordNet-ID folders, or some of them, e.g. "
          "n01440764)")


def wnids_and_names() -> tuple[list[str], list[str]]:
    """ImageNet-1k's WordNet IDs (sorted: the class indices) and class names, from timm's list."""
    from timm.data.imagenet_info import ImageNetInfo

    info: Any = ImageNetInfo()  # timm's methods carry no annotations
    return list(info.label_names()), [info.index_to_description(i) for i in range(1000)]


def load(root: str | Path, *, size: int, interpolation: str = "bicubic", crop: int | None = None,
         skip_bad: bool = False, progress: bool = True) -> FolderRead:
    root = Path(root).expanduser()
    wnids, names = wnids_and_names()
    parts = {name: root / name for name in ("train", "val") if (root / name).is_dir()}
    if "val" not in parts:
        raise DataError(f"{root / 'val'} does not exist; data=imagenet reads {LAYOUT}; pass ",
                        Option("data_dir", Placeholder("DIR")))
    present = {name: _check_classes(folder, wnids) for name, folder in parts.items()}
    splits, files_of = {}, {}
    for name, folder in parts.items():
        files, labels = list_files(folder, wnids)
        files_of[name] = files
        splits[name] = cache.load(cache.Request(f"imagenet-{name}", root, files, labels, wnids, size,
                                                interpolation=interpolation, crop=crop), progress=progress)
    bad = unreadable(splits.values(), root, skip_bad)
    val = as_image_split(splits["val"], names, kept_names(files_of["val"], splits["val"].bad, root))
    train = as_image_split(splits["train"], names, kept_names(files_of["train"], splits["train"].bad, root)) \
        if "train" in splits else ImageSplit(
        torch.empty((0, 3, size, size), dtype=torch.uint8), torch.empty(0, dtype=torch.int64), names)
    source = (f"ImageNet-1k validation set at {root / 'val'} ({len(val):,} images"
              + (f" of {len(present['val']):,} classes" if len(present["val"]) < len(wnids) else "")
              + (f"; train/ {len(train):,}" if len(train) else "; no train/") + "; classes: sorted WordNet IDs, "
              "names from timm); " + decoded_as(size, interpolation, crop))
    readiness = Readiness.of(list(splits.values()))
    subset = None
    if len(present["val"]) < len(wnids):
        subset = f"a subset of {len(present['val']):,} of ImageNet-1k's 1,000 classes"
        readiness.notes.append(f"{root / 'val'} holds {subset} ({', '.join(present['val'][:5])}"
                               + (", ..." if len(present["val"]) > 5 else "") + "): each keeps its ImageNet-1k "
                               "class index, so a model's 1,000-class head is scored on them as they are; accuracy "
                               "on a subset is not comparable with published ImageNet-1k figures")
    return FolderRead(ImageDataset("imagenet", train, val, source, subset), bad, readiness)


def _check_classes(folder: Path, wnids: list[str]) -> list[str]:
    """The WordNet IDs ``folder`` holds (a subset of ImageNet-1k's is fine); folders that are not one, refused."""
    present = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    foreign = sorted(present - set(wnids))
    if foreign:
        raise DataError(f"{folder}: {len(foreign)} folder(s) are not ImageNet-1k WordNet IDs "
                        f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}). data=imagenet reads "
                        f"{LAYOUT} (all of them or some); for another set of classes use data=folder")
    if not present:
        raise DataError(f"{folder} holds no ImageNet-1k class folders; data=imagenet reads {LAYOUT}")
    return [w for w in wnids if w in present]


def write_val_folder(root: str | Path, *, per_class: int = 1, size: tuple[int, int] = (40, 52), seed: int = 0,
                     classes: int = 1000, workers: int = 1) -> Path:
    """A generated folder in ImageNet's validation layout (the 1,000 WordNet IDs; JPEGs of ``size`` (H, W)).

    For tests, and for timing at ImageNet's size (50 per class: 50,000 images, written once
    by ``scripts/suite_timing.py --imagenet``); ``workers`` processes write the classes.
    """
    from concurrent.futures import ProcessPoolExecutor

    root = Path(root)
    wnids, _ = wnids_and_names()
    jobs = [(root / "val" / wnid, index, per_class, size, seed) for index, wnid in enumerate(wnids[:classes])]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_class, jobs, chunksize=8))
    else:
        for job in jobs:
            _write_class(job)
    return root


def _write_class(job: tuple[Path, int, int, tuple[int, int], int]) -> None:
    import numpy as np
    from PIL import Image

    folder, index, per_class, size, seed = job
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, index])
    colour = np.array([index % 256, (index * 7) % 256, (index * 13) % 256])
    for i in range(per_class):
        pixels = np.clip(colour + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{index * per_class + i + 1:08d}.JPEG", quality=90)
