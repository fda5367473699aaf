"""The demo data: scikit-learn's 8x8 handwritten digits (1,797 real images, offline).

Split by class as in Yosinski et al. 2014: digits 0-4 pretrain a small network, digits
5-9 are the transfer task, so "pretrained" features never saw the target classes.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from atml.data import ImageDataset, ImageSplit

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
TRANSFER_CLASSES = (5, 6, 7, 8, 9)
SOURCE = "scikit-learn 8x8 handwritten digits (UCI optdigits test set), shipped with scikit-learn"


def load(classes: tuple[int, ...], *, val_fraction: float = 0.3, seed: int = 0) -> ImageDataset:
    """Digits of ``classes`` as uint8 ``(N, 1, 8, 8)`` in 0-255, labels renumbered 0..k-1."""
    bunch = load_digits()
    keep = np.isin(bunch.target, classes)
    images = np.round(bunch.images[keep] * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = np.searchsorted(np.array(classes), bunch.target[keep])
    x_tr, x_va, y_tr, y_va = train_test_split(images, labels, test_size=val_fraction,
                                              stratify=labels, random_state=seed)
    names = [str(c) for c in classes]
    tag = "-".join(map(str, (classes[0], classes[-1])))
    return ImageDataset(f"digits{tag}", _split(x_tr, y_tr, names), _split(x_va, y_va, names),
                        f"{SOURCE}; classes {classes[0]}-{classes[-1]}, stratified {1 - val_fraction:.0%}/"
                        f"{val_fraction:.0%} split, seed {seed}")


def _split(images: np.ndarray, labels: np.ndarray, names: list[str]) -> ImageSplit:
    return ImageSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)), names)
