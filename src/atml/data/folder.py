"""Any labelled image folder, in torchvision's ImageFolder layout, decoded once into atml's dataset cache.

    DIR/train/CLASS/*.jpg      DIR/val/CLASS/*.jpg      (or DIR/CLASS/*.jpg: split here, fixed seed)

Every image is decoded once, by every core (upright, 16-bit grey scaled, see
:mod:`atml.data.decode`), its short side resized to ``size`` and a ``size`` x ``size`` square
kept (placed for the centre crop the model takes later), optionally made grey for the 28 px
generative models, and kept in
:mod:`atml.data.cache`: later runs memory-map the decoded arrays, so a run's memory does not
grow with the folder. Hidden files and folders (``.DS_Store``, macOS ``._name.jpg``) are
skipped. Every unreadable file is named in one error, or skipped and listed with ``skip_bad``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from atml.data import ImageDataset, ImageSplit, cache
from atml.data.cache import Split as CacheSplit
from atml.data.decode import is_image_file
from atml.errors import DataError, Key, Option, Placeholder

VAL_NAMES = ("val", "valid", "validation", "test")
"""Held-out split folders, in the order one is picked as the validation split."""
SPLIT_NAMES = ("train", *VAL_NAMES)
JUNK_NAMES = ("__MACOSX",)
"""Folders archive tools leave behind (macOS's zip): never a class or a split."""


@dataclasses.dataclass
class FolderRead:
    """A folder dataset, the files that could not be read (when they were skipped), and how it was had."""

    data: ImageDataset
    skipped: list[str]
    readiness: Readiness


@dataclasses.dataclass
class Readiness:
    """How the splits were had: decoded now or read from the cache, where, in how long."""

    images: int
    seconds: float
    from_cache: bool
    """True when every split came from the cache."""
    cache: list[str]
    notes: list[str]
    decoded: list[str] = dataclasses.field(default_factory=list)
    """The cache folders this call decoded (the others were read from the cache)."""

    @classmethod
    def of(cls, splits: Sequence[CacheSplit]) -> Readiness:
        return cls(sum(len(s.labels) for s in splits), sum(s.seconds for s in splits),
                   all(s.from_cache for s in splits), [str(s.path) for s in splits],
                   [n for s in splits for n in s.notes], [str(s.path) for s in splits if not s.from_cache])

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _class_files(train_dir: Path, val_dir: Path | None) -> tuple[dict[str, list[Path]], list[str]]:
    """Each class folder of ``train_dir`` with images, and its files; the empty ones by name. Refused: a validation
    class the training split lacks, and fewer than two classes with images."""
    folders = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in JUNK_NAMES)
    if val_dir is not None:
        extra = sorted({p.name for p in val_dir.iterdir() if p.is_dir() and not p.name.startswith(".")} - set(folders))
        if extra:
            raise DataError(f"{val_dir} has class folder(s) that {train_dir} has not: {', '.join(extra)}; a model "
                            f"trained on {train_dir.name}/ cannot predict them. Add them to {train_dir.name}/ or "
                            f"move them out of {val_dir.name}/")
    found = {name: list_files(train_dir, [name])[0] for name in folders}
    empty = [name for name in folders if not found[name]]
    classes = {name: files for name, files in found.items() if files}
    if len(classes) < 2:
        raise DataError(f"{train_dir} holds {len(classes)} class folder(s) with images"
                        + (f" (empty: {', '.join(empty)})" if empty else "")
                        + "; an image folder needs one subfolder per class (at least two), each holding that class's "
                        "images")
    return classes, empty


def load(root: str | Path, *, size: int, seed: int = 0, val_fraction: float = 0.2, skip_bad: bool = False,
         grayscale: bool = False, interpolation: str = "bilinear", crop: int | None = None,
         progress: bool = True) -> FolderRead:
    """The folder's train and validation splits, each image decoded to a ``size`` square (``crop``: the centre crop
    the model takes of it later, see :func:`atml.data.decode.square_box`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass ", Option("data_dir", Placeholder("DIR")),
                        " with DIR/train/CLASS/*.jpg (and DIR/val/CLASS/*.jpg) or DIR/CLASS/*.jpg")
    train_dir, val_dir, left_out = layout(root)
    found, empty = _class_files(train_dir, val_dir)
    classes = list(found)
    files = [path for name in classes for path in found[name]]
    labels = [index for index, name in enumerate(classes) for _ in found[name]]
    if val_dir is not None:
        parts = {"train": (files, labels), "val": list_files(val_dir, classes)}
        how = f"{train_dir.name}/ and {val_dir.name}/ as given"
    else:
        parts = split_files(files, labels, len(classes), val_fraction, seed)
        how = f"no val/ folder: a stratified {1 - val_fraction:.0%}/{val_fraction:.0%} split, seed {seed}"
    splits = {name: cache.load(cache.Request(f"folder-{root.name}-{name}", root, f, lab, classes, size, grayscale,
                                             interpolation, crop),
                               progress=progress)
              for name, (f, lab) in parts.items()}
    bad = unreadable(splits.values(), root, skip_bad)
    train, val = (as_image_split(splits[n], classes, kept_names(parts[n][0], splits[n].bad, root))
                  for n in ("train", "val"))
    if min(len(train), len(val)) == 0:
        raise DataError(f"{root} gives {len(train)} training and {len(val)} validation images; both need some")
    source = (f"image folder {root} ({len(classes)} classes; {how}); " + decoded_as(size, interpolation, crop)
              + (", converted to grey" if grayscale else ""))
    readiness = Readiness.of(list(splits.values()))
    if empty:
        readiness.notes.append(empty_note(empty, classes, train_dir, val_dir))
    if left_out:
        readiness.notes.append(f"{len(left_out)} folder(s) of {root} left out: {', '.join(n + '/' for n in left_out)} "
                               f"(atml reads {train_dir.name}/ for training and "
                               f"{val_dir.name + '/' if val_dir else 'a split of it'} for validation)")
    return FolderRead(ImageDataset(f"folder:{root.name}", train, val, source), bad, readiness)


def layout(root: Path) -> tuple[Path, Path | None, list[str]]:
    """The training folder, the validation folder (None: split here) and the folders of ``root`` left out.

    Split folders are recognised by name (train, val, valid, validation, test; any case). A root with split folders
    but no train/ is refused: read as classes, ``val/`` and ``test/`` would become a two-class dataset."""
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = {n.lower(): n for n in subfolders if n.lower() in SPLIT_NAMES}
    junk = [n for n in subfolders if n in JUNK_NAMES]
    if not splits:
        return root, None, junk
    if "train" not in splits:
        named = ", ".join(n + "/" for n in sorted(splits.values()))
        raise DataError(f"{root} has split folder(s) {named} but no train/: atml trains on DIR/train/CLASS/*.jpg and "
                        "validates on DIR/val/CLASS/*.jpg. Add a train/ folder, or pass ",
                        Option("data_dir", root / sorted(splits.values())[0]),
                        " to use that folder's classes alone (split here, fixed seed)")
    train = root / splits["train"]
    val = next((root / splits[n] for n in VAL_NAMES if n in splits), None)
    return train, val, [n for n in subfolders if root / n not in (train, val)]


def empty_note(empty: list[str], classes: list[str], train_dir: Path, val_dir: Path | None) -> str:
    """Which class folders were left out for holding no images, in which splits, and what the dataset is then."""
    said = []
    for name in empty:
        held = len(list_files(val_dir, [name])[0]) if val_dir is not None else 0
        where = f"{train_dir.name}/" + (f" and {val_dir.name}/" if val_dir is not None and not held else "")
        said.append(f"{name} (empty in {where}" + (f"; its {held} image(s) in {val_dir.name}/ are left out too"
                                                     if held and val_dir is not None else "") + ")")
    return (f"{len(empty)} class folder(s) hold no images and were left out: {', '.join(said)}; so the dataset has "
            f"{len(classes)} classes ({', '.join(classes)})")


def decoded_as(size: int, interpolation: str, crop: int | None) -> str:
    """How a folder's images were decoded, in words, for the run's notes."""
    placed = (f", placed so the model's centre crop of {crop} px keeps the pixels torchvision's Resize({size}) + "
              f"CenterCrop({crop}) keeps" if crop and crop < size else "")
    return (f"every image's short side resized to {size} px ({interpolation}), a {size}x{size} centre square "
            f"kept{placed}")


def unreadable(splits: Iterable[cache.Split], root: Path, skip_bad: bool) -> list[str]:
    """The files the splits could not decode; without ``skip_bad``, one error naming them (the first 20)."""
    bad = [b for s in splits for b in s.bad]
    if bad and not skip_bad:
        raise DataError(f"cannot read {len(bad)} image(s) in {root}: {'; '.join(bad[:20])}"
                        + (f"; and {len(bad) - 20} more" if len(bad) > 20 else "")
                        + ". Remove them, or pass ", Key("skip_bad_images", True),
                        " to leave them out (they are listed)")
    return bad


def list_files(folder: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Every image file under ``folder/CLASS`` (nested folders too; hidden files and folders skipped), in order."""
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        directory = folder / name
        found = sorted(p for p in directory.rglob("*") if p.is_file() and is_image_file(p)
                       and not any(part.startswith(".") for part in p.relative_to(directory).parts)) \
            if directory.is_dir() else []
        files += found
        labels += [index] * len(found)
    return files, labels


def split_files(files: list[Path], labels: list[int], n_classes: int, val_fraction: float,
                seed: int) -> dict[str, tuple[list[Path], list[int]]]:
    """Stratified by class, with a fixed seed: the same folder always splits the same way."""
    generator = torch.Generator().manual_seed(seed)
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    train_idx, val_idx = [], []
    for c in range(n_classes):
        idx = (label_tensor == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    picked = {"train": torch.cat(train_idx).sort().values.tolist(), "val": torch.cat(val_idx).sort().values.tolist()}
    return {name: ([files[i] for i in idx], [labels[i] for i in idx]) for name, idx in picked.items()}


def as_image_split(split: cache.Split, classes: Sequence[str], names: list[str] | None = None) -> ImageSplit:
    """The cached arrays as torch tensors over the same memory map (no copy)."""
    return ImageSplit(torch.from_numpy(split.images), torch.from_numpy(split.labels), list(classes), names)


def kept_names(files: Sequence[Path], bad: Sequence[str], root: Path) -> list[str]:
    """The files a split holds, in its order, relative to ``root``: those given, less the unreadable ones (each
    ``bad`` entry is ``"PATH (why)"``)."""
    return [str(f.relative_to(root)) for f in files if not any(entry.startswith(f"{f} (") for entry in bad)]


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
