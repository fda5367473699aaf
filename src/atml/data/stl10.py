"""STL-10 from its official binary files (``stl10_binary``): 5,000 train and 8,000 test images.

Each ``*_X.bin`` holds uint8 images of 3x96x96 stored column-major (so every plane is
transposed), each ``*_y.bin`` uint8 labels 1..10. Every file is checked against the MD5
torchvision publishes before it is read; the 2.6 GB ``unlabeled_X.bin`` is not needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atml.data import ImageDataset, ImageSplit, integrity
from atml.errors import DataError, Option, Part, Placeholder

FOLDER = "stl10_binary"
SIZE = 96
MD5 = {
    "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
    "train_y.bin": "5a34089d4802c674881badbb80307741",
    "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
    "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
}
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
HOW_TO_GET: tuple[Part, ...] = (
    "Download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (2.6 GB), extract it so that "
    "DIR/stl10_binary/ holds train_X.bin, train_y.bin, test_X.bin and test_y.bin, and pass ",
    Option("data_dir", Placeholder("DIR")),
    "; or run once online without ", Option("offline", True), " to let torchvision download it."
)


def load(root: str | Path, *, offline: bool) -> ImageDataset:
    """The official labelled train (5,000) and test (8,000) splits; downloads only when allowed."""
    root = Path(root)
    folder = _folder(root)
    if not all((folder / name).is_file() for name in MD5) and not offline:
        from torchvision.datasets import STL10

        try:
            STL10(str(root), split="train", download=True)
        except Exception as err:  # network errors come in many types
            raise DataError(f"STL-10 is not in {root} and downloading it failed ({err}). ", *HOW_TO_GET) from err
        folder = _folder(root)
    integrity.verify_files(folder, MD5, dataset="STL-10", how_to_get=HOW_TO_GET)
    return _read(folder, "stl10", f"STL-10 official binaries at {folder} (MD5 verified)")


def load_generated(root: str | Path) -> ImageDataset:
    """Files written by :func:`write_binaries` (smoke preset, tests), checked by their manifest."""
    folder = _folder(Path(root))
    integrity.verify_files(folder, integrity.read_manifest(folder), dataset="STL-10 (generated)",
                           how_to_get=("Regenerate it with atml.data.stl10.write_binaries.",))
    return _read(folder, "generated-stl10", f"generated STL-10-format binaries at {folder} (not real STL-10)")


def _folder(root: Path) -> Path:
    return root if root.name == FOLDER else root / FOLDER


def _read(folder: Path, name: str, source: str) -> ImageDataset:
    splits = [ImageSplit(*_read_split(folder, split), list(CLASSES)) for split in ("train", "test")]
    return ImageDataset(name, splits[0], splits[1], source)


def _read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = np.fromfile(x_path, dtype=np.uint8)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    per_image = 3 * SIZE * SIZE
    if raw.size % per_image or raw.size // per_image != labels.size:
        raise DataError(f"STL-10: {x_path} holds {raw.size} bytes, not {labels.size} images of 3x96x96 as "
                        f"{y_path} says; the files do not belong together. ", *HOW_TO_GET)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"STL-10: {y_path} has labels outside 1..10. ", *HOW_TO_GET)
    images = raw.reshape(-1, 3, SIZE, SIZE).transpose(0, 1, 3, 2)  # column-major planes -> (N, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def write_binaries(root: str | Path, *, n_train: int = 50, n_test: int = 50, seed: int = 0) -> Path:
    """Generated files in the official on-disk format (smoke preset, tests), with a manifest.

    Images are a per-class colour plus noise, so a model can tell the classes apart.
    """
    folder = _folder(Path(root))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (10, 3, 1, 1))
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        with open(folder / f"{split}_X.bin", "wb") as handle:
            for start in range(0, n, 500):  # in chunks: 8,000 float images at once would take 900 MB
                part = labels[start:start + 500]
                noisy = palette[part] + rng.normal(0, 40, (len(part), 3, SIZE, SIZE)).astype(np.float32)
                handle.write(np.clip(noisy, 0, 255).astype(np.uint8).transpose(0, 1, 3, 2).tobytes())
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    integrity.write_manifest(folder, list(MD5))
    return folder
