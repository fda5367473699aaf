"""CIFAR-100 from the official python-pickle files (``cifar-100-python``): 50,000 train, 10,000 test, 100 classes.

As for CIFAR-10, every file's MD5 is checked *before* it is unpickled, so only the
official bytes (or files atml generated itself, :func:`load_generated`) reach ``pickle``.
The fine labels (100 classes) are used.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atml.data import ImageDataset, ImageSplit, integrity
from atml.errors import DataError, Option, Part, Placeholder

FOLDER = "cifar-100-python"
MD5 = {  # as published with the archive and checked by torchvision
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
HOW_TO_GET: tuple[Part, ...] = (
    "Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extract it so that "
    "DIR/cifar-100-python/ holds train, test and meta, and pass ", Option("data_dir", Placeholder("DIR")),
    "; or run once online without ", Option("offline", True), " to let torchvision download it."
)


def load(root: str | Path, *, offline: bool) -> ImageDataset:
    """The official train (50,000) and test (10,000) splits with fine labels; downloads only when allowed."""
    root = Path(root)
    folder = _folder(root)
    if not all((folder / name).is_file() for name in MD5) and not offline:
        from torchvision.datasets import CIFAR100

        integrity.torchvision_download(CIFAR100, root, dataset="CIFAR-100", how_to_get=HOW_TO_GET)
        folder = _folder(root)
    integrity.verify_files(folder, MD5, dataset="CIFAR-100", how_to_get=HOW_TO_GET)
    return _read(folder, "cifar100", f"CIFAR-100 official python files at {folder} (MD5 verified; fine labels)")


def load_generated(root: str | Path) -> ImageDataset:
    """Files written by :func:`write_files` (tests), checked by their manifest."""
    folder = _folder(Path(root))
    integrity.verify_files(folder, integrity.read_manifest(folder), dataset="CIFAR-100 (generated)",
                           how_to_get=("Regenerate it with atml.data.cifar100.write_files.",))
    return _read(folder, "generated-cifar100", f"generated CIFAR-100-format files at {folder} (not real CIFAR-100)")


def _folder(root: Path) -> Path:
    return root if root.name == FOLDER else root / FOLDER


def _read(folder: Path, name: str, source: str) -> ImageDataset:
    classes = [str(c) for c in _unpickle(folder / "meta")["fine_label_names"]]
    train, test = (_split(folder / part, classes) for part in ("train", "test"))
    return ImageDataset(name, train, test, source)


def _split(path: Path, classes: list[str]) -> ImageSplit:
    entry = _unpickle(path)
    try:
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    except (KeyError, ValueError) as err:
        raise DataError(f"{path} is not a CIFAR-100 file ({err}); obtain the official files. ", *HOW_TO_GET) from err
    return ImageSplit(torch.from_numpy(data.copy()), torch.from_numpy(labels), classes)


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")  # noqa: S301 - MD5-verified official or generated files only
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def write_files(root: str | Path, *, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Small files in the official format (100 colour templates plus noise) with a generated-data manifest."""
    folder = _folder(Path(root))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.uniform(40, 215, size=(100, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 100, size=n)
        data = np.clip(templates[labels] + rng.normal(0, 30, size=(n, 3, 32, 32)), 0, 255).astype(np.uint8)
        entry = {"data": data.reshape(n, 3072), "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist(), "filenames": [f"generated_{i:05d}.png" for i in range(n)]}
        with open(folder / part, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class_{i:02d}" for i in range(100)],
                     "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}, handle, protocol=2)
    integrity.write_manifest(folder, list(MD5))
    return folder
