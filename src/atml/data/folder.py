"""Any labelled image folder, in torchvision's ImageFolder layout, as atml's in-memory uint8 tensors.

    DIR/train/CLASS/*.jpg      DIR/val/CLASS/*.jpg      (or DIR/CLASS/*.jpg: split here, fixed seed)

Every image is decoded once (upright, 16-bit grey scaled, see :mod:`atml.data.images`),
its short side resized to ``size`` and centre-cropped to ``size`` x ``size`` (the size is
recorded in the dataset's source), optionally made grey for the 28 px generative models.
Every unreadable file is named in one error, or skipped and listed with ``skip_bad``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from atml.data import ImageDataset, ImageSplit
from atml.data.images import IMAGE_SUFFIXES, load_rgb, square
from atml.errors import DataError

VAL_NAMES = ("val", "valid", "validation", "test")


@dataclasses.dataclass
class FolderRead:
    """A folder dataset and the files that could not be read (when they were skipped)."""

    data: ImageDataset
    skipped: list[str]


def load(root: str | Path, *, size: int, seed: int = 0, val_fraction: float = 0.2, skip_bad: bool = False,
         grayscale: bool = False) -> FolderRead:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass --data-dir DIR with DIR/train/CLASS/*.jpg "
                        "(and DIR/val/CLASS/*.jpg) or DIR/CLASS/*.jpg")
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None) if train_dir != root else None
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{train_dir} holds {len(classes)} class folder(s); an image folder needs one subfolder per "
                        "class (at least two), each holding that class's images")
    bad: list[str] = []
    train = _read_split(train_dir, classes, size, grayscale, bad)
    if val_dir is not None:
        val = _read_split(val_dir, classes, size, grayscale, bad)
        how = f"{train_dir.name}/ and {val_dir.name}/ as given"
    else:
        train, val = _split(train, val_fraction, seed)
        how = f"no val/ folder: a stratified {1 - val_fraction:.0%}/{val_fraction:.0%} split, seed {seed}"
    if bad and not skip_bad:
        raise DataError(f"cannot read {len(bad)} image(s) in {root}: {'; '.join(bad[:20])}"
                        + (f"; and {len(bad) - 20} more" if len(bad) > 20 else "")
                        + ". Remove them, or pass --set skip_bad_images=true to leave them out (they are listed)")
    if min(len(train), len(val)) == 0:
        raise DataError(f"{root} gives {len(train)} training and {len(val)} validation images; both need some")
    source = (f"image folder {root} ({len(classes)} classes; {how}); every image's short side resized to {size} px "
              f"and centre-cropped to {size}x{size}" + (", converted to grey" if grayscale else ""))
    return FolderRead(ImageDataset(f"folder:{root.name}", train, val, source), bad)


def _read_split(folder: Path, classes: list[str], size: int, grayscale: bool, bad: list[str]) -> ImageSplit:
    images, labels = [], []
    for index, name in enumerate(classes):
        directory = folder / name
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
            if directory.is_dir() else []
        for path in files:
            try:
                image = square(torch.from_numpy(load_rgb(path)).permute(2, 0, 1), size)
            except (OSError, ValueError) as err:  # Pillow: UnidentifiedImageError (an OSError), truncated files...
                bad.append(f"{path} ({str(err).splitlines()[0][:100]})")
                continue
            images.append(_grey(image) if grayscale else image)
            labels.append(index)
    channels = 1 if grayscale else 3
    stacked = torch.stack(images) if images else torch.empty((0, channels, size, size), dtype=torch.uint8)
    return ImageSplit(stacked, torch.tensor(labels, dtype=torch.int64), list(classes))


def _grey(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as Pillow's convert("L")."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (image.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _split(split: ImageSplit, val_fraction: float, seed: int) -> tuple[ImageSplit, ImageSplit]:
    """Stratified by class, with a fixed seed: the same folder always splits the same way."""
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for c in range(len(split.classes)):
        idx = (split.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr, va = torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values
    return (ImageSplit(split.images[tr], split.labels[tr], split.classes),
            ImageSplit(split.images[va], split.labels[va], split.classes))


def write_folder(root: str | Path, *, classes: tuple[str, ...] = ("ants", "bees", "cats"), per_class: int = 6,
                 size: tuple[int, int] = (40, 56), with_val: bool = True, seed: int = 0) -> Path:
    """A small generated image folder (JPEG and PNG, per-class colours) in the ImageFolder layout, for tests."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "val") if with_val else ("",):
        for c, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([80 * c % 256, 150, 255 - 70 * c % 256])
            for i in range(per_class if split != "val" else max(2, per_class // 2)):
                pixels = np.clip(colour + rng.normal(0, 25, (*size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.{'png' if i % 2 else 'jpg'}")
    return root
