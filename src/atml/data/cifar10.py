"""CIFAR-10 from the official python-pickle batches (``cifar-10-batches-py``).

Every file's MD5 is checked *before* it is unpickled, so only the known official bytes
(or files atml generated itself, through :func:`load_generated`) ever reach ``pickle``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atml.data import ImageDataset, ImageSplit, integrity
from atml.errors import DataError, Option, Part, Placeholder

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
# The official MD5s, as published with the archive and checked by torchvision.
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
HOW_TO_GET: tuple[Part, ...] = (
    "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it so that "
    "DIR/cifar-10-batches-py/ holds the batches, and pass ", Option("data_dir", Placeholder("DIR")),
    "; or run once online without ", Option("offline", True), " to let torchvision download it."
)


def load(root: str | Path, *, offline: bool) -> ImageDataset:
    """The official train (50,000) and test (10,000) splits; downloads only when allowed."""
    root = Path(root)
    folder = _folder(root)
    if not all((folder / name).is_file() for name in MD5) and not offline:
        from torchvision.datasets import CIFAR10

        integrity.torchvision_download(CIFAR10, root, dataset="CIFAR-10", how_to_get=HOW_TO_GET)
        folder = _folder(root)
    integrity.verify_files(folder, MD5, dataset="CIFAR-10", how_to_get=HOW_TO_GET)
    return _read(folder, "cifar10", f"CIFAR-10 official batches at {folder} (MD5 verified)")


def load_generated(root: str | Path) -> ImageDataset:
    """Files written by :func:`write_batches` (smoke preset, tests), checked by their manifest."""
    folder = _folder(Path(root))
    integrity.verify_files(folder, integrity.read_manifest(folder), dataset="CIFAR-10 (generated)",
                           how_to_get=("Regenerate it with atml.data.cifar10.write_batches.",))
    return _read(folder, "generated-cifar10", f"generated CIFAR-10-format batches at {folder} (not real CIFAR-10)")


def _folder(root: Path) -> Path:
    return root if root.name == FOLDER else root / FOLDER


def _read(folder: Path, name: str, source: str) -> ImageDataset:
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    images = torch.cat([t[0] for t in train])
    labels = torch.cat([t[1] for t in train])
    test_images, test_labels = _read_batch(folder / TEST_FILE)
    meta = _unpickle(folder / META_FILE)
    classes = [str(c) for c in meta["label_names"]]
    return ImageDataset(name, ImageSplit(images, labels, classes),
                        ImageSplit(test_images, test_labels, classes), source)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    entry = _unpickle(path)
    try:
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # (N, C, H, W)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except (KeyError, ValueError) as err:
        raise DataError(f"{path} is not a CIFAR-10 batch ({err}); obtain the official files. ", *HOW_TO_GET) from err
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")  # noqa: S301 - MD5-verified official files only
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def write_batches(root: str | Path, *, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """Write small batches in the official on-disk format, with learnable class structure.

    Each class has its own smooth colour template; images are template plus noise. Used by
    the smoke preset and the tests (MD5s are recorded in a manifest, since no official
    MD5 can match generated files).
    """
    folder = _folder(Path(root))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = _templates(rng)
    per_batch = np.array_split(np.arange(n_train), len(TRAIN_FILES))
    for name, idx in zip(TRAIN_FILES, per_batch):
        _write_batch(folder / name, rng, templates, len(idx), name)
    _write_batch(folder / TEST_FILE, rng, templates, n_test, "testing batch 1 of 1")
    meta = {"label_names": CLASSES, "num_cases_per_batch": max(len(i) for i in per_batch), "num_vis": 3072}
    with open(folder / META_FILE, "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    integrity.write_manifest(folder, list(MD5))
    return folder


def _templates(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.uniform(40, 215, size=(len(CLASSES), 3, 4, 4))
    return coarse.repeat(8, axis=2).repeat(8, axis=3)  # (classes, 3, 32, 32)


def _write_batch(path: Path, rng: np.random.Generator, templates: np.ndarray, n: int, label: str) -> None:
    labels = rng.integers(0, len(CLASSES), size=n)
    data = np.empty((n, 3072), dtype=np.uint8)
    for start in range(0, n, 2000):  # in chunks: 10,000 float images at once would take 250 MB
        part = labels[start:start + 2000]
        noisy = templates[part] + rng.normal(0, 30, size=(len(part), 3, 32, 32)).astype(np.float32)
        data[start:start + 2000] = np.clip(noisy, 0, 255).astype(np.uint8).reshape(len(part), 3072)
    entry = {"batch_label": label, "labels": labels.tolist(), "data": data,
             "filenames": [f"generated_{i:05d}.png" for i in range(n)]}
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)
