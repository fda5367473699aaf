"""FashionMNIST from its four gzipped IDX files, each MD5-checked before it is parsed.

Looks in ``DIR/FashionMNIST/raw/`` (torchvision's layout) or directly in ``DIR``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from atml.data import ImageDataset, ImageSplit, integrity
from atml.errors import DataError, Option, Part, Placeholder

MD5 = {  # published with the dataset; the same values torchvision checks
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
HOW_TO_GET: tuple[Part, ...] = (
    "Download the four .gz files from https://github.com/zalandoresearch/fashion-mnist (data/fashion) "
    "into DIR/FashionMNIST/raw/ and pass ", Option("data_dir", Placeholder("DIR")),
    "; or run once online without ", Option("offline", True), " to let torchvision download them."
)
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def load(root: str | Path, *, offline: bool) -> ImageDataset:
    """The official 60,000 training and 10,000 test images, ``(N, 1, 28, 28)`` uint8."""
    root = Path(root)
    folder = _folder(root)
    if not all((folder / name).is_file() for name in MD5) and not offline:
        from torchvision.datasets import FashionMNIST

        integrity.torchvision_download(FashionMNIST, root, dataset="FashionMNIST", how_to_get=HOW_TO_GET)
        folder = _folder(root)
    integrity.verify_files(folder, MD5, dataset="FashionMNIST", how_to_get=HOW_TO_GET)
    return _read(folder, "fashion-mnist", f"FashionMNIST official IDX files at {folder} (MD5 verified)")


def load_generated(root: str | Path) -> ImageDataset:
    """Files written by :func:`write_idx` (smoke preset, tests), checked by their manifest."""
    folder = _folder(Path(root))
    integrity.verify_files(folder, integrity.read_manifest(folder), dataset="FashionMNIST (generated)",
                           how_to_get=("Regenerate it with atml.data.fashion_mnist.write_idx.",))
    return _read(folder, "generated-fashion-mnist",
                 f"generated FashionMNIST-format IDX files at {folder} (not real FashionMNIST)")


def _folder(root: Path) -> Path:
    nested = root / "FashionMNIST" / "raw"
    return nested if nested.is_dir() or not (root / next(iter(MD5))).exists() else root


def _read(folder: Path, name: str, source: str) -> ImageDataset:
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", IMAGES_MAGIC)
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(f"{folder}: {prefix} has {len(images)} images but {len(labels)} labels")
        splits.append(ImageSplit(torch.from_numpy(images[:, None].copy()),
                                 torch.from_numpy(labels.astype(np.int64)), list(CLASSES)))
    return ImageDataset(name, splits[0], splits[1], source)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes (big-endian header: magic, then sizes)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    found, = struct.unpack(">i", data[:4])
    if found != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {found}, expected {magic})")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {body.size} values")
    return body.reshape(shape)


def write_idx(root: str | Path, *, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write small gzipped IDX files in the official format, with learnable class shapes."""
    folder = Path(root) / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, size=(len(CLASSES), 7, 7)).repeat(4, axis=1).repeat(4, axis=2)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, len(CLASSES), size=n).astype(np.uint8)
        images = np.empty((n, 28, 28), dtype=np.uint8)
        for start in range(0, n, 5000):
            part = labels[start:start + 5000]
            noisy = templates[part] + rng.normal(0, 25, size=(len(part), 28, 28)).astype(np.float32)
            images[start:start + 5000] = np.clip(noisy, 0, 255).astype(np.uint8)
        _write(folder / f"{prefix}-images-idx3-ubyte.gz", IMAGES_MAGIC, images)
        _write(folder / f"{prefix}-labels-idx1-ubyte.gz", LABELS_MAGIC, labels)
    integrity.write_manifest(folder, list(MD5))
    return folder


def _write(path: Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb", compresslevel=1 if array.size > 10**7 else 9) as handle:
        handle.write(header + array.tobytes())
